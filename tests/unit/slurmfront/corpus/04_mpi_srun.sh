#!/bin/bash -l
#SBATCH --nodes=2
#SBATCH --ntasks=64
#SBATCH --ntasks-per-node=32
#SBATCH --time=0-04:00
#SBATCH --mem-per-cpu=3G
#SBATCH --account=chem
#SBATCH --qos=high

module load openmpi
srun --mpi=pmix ./lammps -in in.melt
