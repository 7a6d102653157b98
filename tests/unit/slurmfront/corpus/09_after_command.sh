#!/bin/bash
#SBATCH --time=10
echo starting
#SBATCH --time=600
#SBATCH --mem=100G
python work.py
