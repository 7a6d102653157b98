#!/bin/bash
#SBATCH --gres=gpu:2
#SBATCH --gres-flags=enforce-binding
#SBATCH --switches=1@01:00:00
#SBATCH --time=10
nvidia-smi
