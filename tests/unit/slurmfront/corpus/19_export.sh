#!/bin/bash
#SBATCH --export=ALL,OMP_NUM_THREADS=8,MODEL=llama
#SBATCH --time=10:00
#SBATCH -c 8
python infer.py
