#!/bin/bash
#SBATCH --mem=4096
#SBATCH --time=1:30
echo mem
