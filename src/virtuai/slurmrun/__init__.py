"""Slurm's execution model inside a virtuai task: the batch step, ``srun`` and ``scontrol``.

``runner.py`` is shipped *as source* in the job's command (``python3 -c``),
so it runs wherever the task runs (this machine, a virtual node, an image
without virtuai) and must import nothing but the standard library (an
import-linter contract keeps it so).
"""
