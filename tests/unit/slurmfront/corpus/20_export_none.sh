#!/bin/bash
#SBATCH --export=NONE
#SBATCH --time=15
#SBATCH --chdir=/scratch/run1
srun --export=ALL ./solver
