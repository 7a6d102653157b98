#!/bin/bash
#SBATCH -G a100:4
#SBATCH -n 1
#SBATCH -c 32
#SBATCH --mem=256G
#SBATCH -t 3-0
python big.py
