"""Slurm's front end, read as Slurm 22.05's ``sbatch`` reads it: pure, no I/O.

``script`` finds the ``#SBATCH`` directives of a batch script, ``options``
reads them (and command-line arguments, and ``SBATCH_*`` variables) as
``getopt_long`` does, ``values`` parses Slurm's own value formats (times,
memory in MiB, GRES, arrays, dependencies, signals, ``--export``, output
patterns), ``hostlist`` compresses and expands ``lab-[0-3]``, and ``resolve``
turns it all into one ``Resolution``: what Slurm would give the job, every
directive with its line and what became of it.  The CLI does the I/O.
"""
