#!/bin/bash
#SBATCH --time=5
echo hi
