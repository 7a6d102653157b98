#!/bin/bash
#SBATCH --array=0-20:5,42
#SBATCH --time=2
#SBATCH --output=/abs/out/%A-%a.txt
echo $SLURM_ARRAY_TASK_ID
