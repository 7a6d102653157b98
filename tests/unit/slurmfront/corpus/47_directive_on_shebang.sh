#!/bin/bash #SBATCH -p gpu
#SBATCH --time=10
hostname
