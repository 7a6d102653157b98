#!/bin/bash
#SBATCH --nodes=2
#SBATCH --tasks=2
#SBATCH --time=10
srun hostname
