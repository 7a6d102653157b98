#!/bin/bash
#SBATCH --ntasks=1
#SBATCH --time=00:10:00
#SBATCH --mem=500M

cat > config.yaml <<YAML
#SBATCH --time=99:00:00
lr: 0.001
YAML
python run.py config.yaml
