#!/bin/bash
#SBATCH --nodes=3
#SBATCH --tasks=2
#SBATCH --time=10
srun hostname
