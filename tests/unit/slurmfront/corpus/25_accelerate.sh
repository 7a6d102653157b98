#!/bin/bash
#SBATCH --job-name=accel
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=06:00:00
#SBATCH --output=%x-%j.out

export GPUS_PER_NODE=4
export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)
export MASTER_PORT=6000
srun accelerate launch --num_processes $GPUS_PER_NODE --main_process_ip $MASTER_ADDR train.py
