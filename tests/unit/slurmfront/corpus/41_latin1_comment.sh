#!/bin/bash
# café au lait
#SBATCH --time=7
echo ok
