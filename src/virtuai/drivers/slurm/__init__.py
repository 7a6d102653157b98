"""Slurm sites: a real Slurm cluster through its commands, on this machine or over SSH.

``transport`` runs commands (locally, or on the login node through one reused
asyncssh connection), ``batch`` writes one attempt's batch script, ``client``
runs ``sbatch``/``squeue``/``sacct``/``scancel``/``sinfo`` batched, ``states``
maps Slurm's states to virtuai's outcomes, ``driver`` fulfils the driver
contract (``drivers.base``) for one site.
"""
