#!/bin/bash
#SBATCH --job-name=nightly
#SBATCH --dependency=singleton
#SBATCH --time=60
./nightly.sh
