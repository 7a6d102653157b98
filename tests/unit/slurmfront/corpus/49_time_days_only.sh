#!/bin/bash
#SBATCH --time=1-
#SBATCH --nodes=2-2
srun hostname
