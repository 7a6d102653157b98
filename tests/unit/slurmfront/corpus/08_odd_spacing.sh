#!/bin/bash
#SBATCH    --job-name   odd
#SBATCH --mem   8G    # eight gigs
#SBATCH	--ntasks=2
#SBATCH --cpus-per-task="3"


echo hi
