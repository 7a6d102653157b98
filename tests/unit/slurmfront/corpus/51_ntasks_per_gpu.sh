#!/bin/bash
#SBATCH -N 2
#SBATCH --gpus-per-node=2
#SBATCH --ntasks-per-gpu=1
#SBATCH --time=5
srun python train.py
