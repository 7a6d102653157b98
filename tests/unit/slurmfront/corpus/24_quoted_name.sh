#!/bin/bash
#SBATCH --job-name="my job name"
#SBATCH --comment='keep # this'
#SBATCH --time 20
echo quoted
