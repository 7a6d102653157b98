#!/bin/bash
#SBATCH --exclusive=user
#SBATCH --ntasks=16
#SBATCH --time=1-0:0:0
#SBATCH --mem=0
mpirun ./app
