#!/bin/bash
#SBATCH --dependency=afterok:1234:1235,afternotok:1300
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --time=1:00
python evaluate.py
