#!/bin/sh
#SBATCH -N1 -n4
#SBATCH -c4
#SBATCH -t1:00:00
#SBATCH -p cpu
#SBATCH -J shorty
#SBATCH -o out.%j
#SBATCH -e err.%j
#SBATCH -A physics
./a.out
