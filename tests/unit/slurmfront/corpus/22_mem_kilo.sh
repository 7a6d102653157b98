#!/bin/bash
#SBATCH --mem=1500K
#SBATCH --time=100
echo kilo
