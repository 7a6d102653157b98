#!/bin/bash
#SBATCH --gres=gpu:v100:2,nvme:1
#SBATCH --time=15
hostname
