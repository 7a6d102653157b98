#!/bin/bash
#SBATCH --nodes=3
#SBATCH --mem-per-cpu=1G
#SBATCH --cpus-per-task=2
#SBATCH --time=00:05:00
srun hostname
