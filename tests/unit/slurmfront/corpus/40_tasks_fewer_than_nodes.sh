#!/bin/bash
#SBATCH -N 2
#SBATCH -n 1
#SBATCH --time=5
hostname
