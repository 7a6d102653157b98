#!/bin/bash
#SBATCH -J
#SBATCH --time=5
hostname
