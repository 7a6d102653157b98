#!/bin/bash
#SLURM --time=7
#SBATCH --ntasks=3
srun hostname
