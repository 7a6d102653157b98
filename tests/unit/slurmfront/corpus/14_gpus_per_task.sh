#!/bin/bash
#SBATCH --ntasks=4
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=10
#SBATCH --mem-per-gpu=40G
#SBATCH --time=1-00:00:00
srun python ddp.py
