#!/bin/bash
#SBATCH --mem-per=2G
#SBATCH --time=15
hostname
