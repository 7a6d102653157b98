#!/bin/bash
#SBATCH --job=abbrev
#SBATCH --part=debug
#SBATCH --time=15
hostname
