#!/bin/bash
#SBATCH --job-name=long-train
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --gres=gpu:a100:2
#SBATCH --mem=64G

handler() {
  echo "caught USR1, requeueing $SLURM_JOB_ID"
  scontrol requeue $SLURM_JOB_ID
}
trap handler USR1

python train.py --resume &
wait
