#!/bin/bash
#SBATCH -d afterany:10?afterok:11
#SBATCH -t 5
echo one of them ended
