#!/bin/bash
#SBATCH --time=2-12
#SBATCH --time-min=1-00
hostname
