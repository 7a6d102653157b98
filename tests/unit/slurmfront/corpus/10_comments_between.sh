#!/bin/bash
# ---------------------------------------------------------
# Slurm directives
# ---------------------------------------------------------
#SBATCH --job-name=bert   # job name

##SBATCH --gres=gpu:4     # disabled
#SBATCH --gres=gpu:2      # two GPUs
    #SBATCH --time=1      (indented: a comment)
#SBATCH --time=8:00:00

python bert.py
