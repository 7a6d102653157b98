#!/bin/bash
#SBATCH --ntasks=٣
#SBATCH --time=15
hostname
