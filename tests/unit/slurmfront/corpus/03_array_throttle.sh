#!/bin/bash
#SBATCH -J sweep
#SBATCH -a 1-100%10
#SBATCH -c 2
#SBATCH --mem-per-cpu=2000
#SBATCH -t 30
#SBATCH -o sweep_%A_%a.log

python sweep.py --trial ${SLURM_ARRAY_TASK_ID}
