#!/bin/bash
#SBATCH --time=1h30
hostname
