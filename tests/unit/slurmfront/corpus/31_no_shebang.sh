#SBATCH --time=5
echo no shebang
