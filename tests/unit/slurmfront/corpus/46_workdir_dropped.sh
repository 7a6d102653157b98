#!/bin/bash
#SBATCH --workdir=/scratch/ada
#SBATCH --time=10
pwd
