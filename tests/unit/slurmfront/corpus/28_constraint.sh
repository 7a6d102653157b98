#!/bin/bash
#SBATCH --constraint="a100&nvlink"
#SBATCH --gres=gpu:1
#SBATCH --time=10
nvidia-smi
