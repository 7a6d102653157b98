#!/bin/bash
#SBATCH --no-requeue
#SBATCH --signal=SIGTERM@300
#SBATCH --time=1:00:00
python serve.py
