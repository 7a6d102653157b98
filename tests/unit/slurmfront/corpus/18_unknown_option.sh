#!/bin/bash
#SBATCH --time=10
#SBATCH --gpus-per-banana=2
hostname
