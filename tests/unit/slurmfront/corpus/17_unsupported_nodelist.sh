#!/bin/bash
#SBATCH --nodelist=node[01-04]
#SBATCH --time=10
hostname
