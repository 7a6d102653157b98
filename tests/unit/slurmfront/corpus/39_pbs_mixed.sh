#!/bin/bash
#SBATCH --time=30
#PBS -l walltime=00:30:00
hostname
