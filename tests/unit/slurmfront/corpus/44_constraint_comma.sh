#!/bin/bash
#SBATCH --constraint=blade,ib
#SBATCH --time=10
hostname
