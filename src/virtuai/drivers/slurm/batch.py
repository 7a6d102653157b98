"""One virtuai job attempt as one Slurm batch script.

The attempt key (``<job>.<attempt>``) is the job's name (``vai-<key>``) and, with
the site's token, its comment: a resubmission after a crash looks it up first
(``client.SlurmClient.submit``), so an attempt is never two Slurm jobs.

A gang of N tasks is ``--ntasks=N`` (``--nodes=K --ntasks-per-node=N/K`` when the
virtuai placement spread it evenly over K nodes) run by one ``srun`` step; each
task gets virtuai's environment with ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` from
Slurm's ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` and ``MASTER_ADDR``
the first node of the allocation.  Every task writes its own
``vai-<key>.<rank>.out|err`` in the site's log directory.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIB = 1024 * 1024

# Set per task by the wrapper from Slurm's own variables, never from virtuai's placement.
PER_TASK_VARS = frozenset(
    {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "VIRTUAI_TASK_INDEX",
        "VIRTUAI_NODE",
        "CUDA_VISIBLE_DEVICES",
    }
)


def job_name(key: str) -> str:
    return f"vai-{key}"


def comment(token: str, key: str) -> str:
    return f"virtuai:{token}:{key}"


@dataclass(frozen=True, slots=True)
class BatchRequest:
    key: str  # "<job>.<attempt>"
    token: str  # the site's token: tells this installation's jobs from others'
    command: Sequence[str]
    env: Mapping[str, str]
    tasks: int
    nodes: int  # distinct nodes of virtuai's placement (a hint for --nodes)
    cpu_milli: int  # per task
    memory: int  # bytes per task
    gpus: int  # per task
    walltime_s: int
    log_dir: str
    workdir: str | None = None
    partition: str | None = None
    account: str | None = None
    # Asked for with the job's --signal: Slurm sends it this long before the time limit.
    checkpoint_signal: int = 15
    checkpoint_grace_s: int | None = None


def sbatch_options(req: BatchRequest) -> list[str]:
    cpus = max(1, math.ceil(req.cpu_milli / 1000))
    opts = [
        f"--job-name={job_name(req.key)}",
        f"--comment={comment(req.token, req.key)}",
        f"--time={max(1, math.ceil(req.walltime_s / 60))}",
        f"--cpus-per-task={cpus}",
        f"--mem-per-cpu={max(1, math.ceil(req.memory / cpus / MIB))}M",
        f"--output={req.log_dir}/vai-{req.key}.batch.out",
        "--no-requeue",
        "--kill-on-invalid-dep=yes",
    ]
    if req.tasks > 1 and req.nodes > 0 and req.tasks % req.nodes == 0:
        per_node = req.tasks // req.nodes
        opts += [f"--nodes={req.nodes}", f"--ntasks-per-node={per_node}"]
        if req.gpus:
            opts.append(f"--gres=gpu:{req.gpus * per_node}")
    else:
        opts.append(f"--ntasks={req.tasks}")
        if req.gpus and req.tasks == 1:
            opts.append(f"--gres=gpu:{req.gpus}")
        elif req.gpus:
            opts.append(f"--gpus-per-task={req.gpus}")
    if req.checkpoint_grace_s is not None:
        opts.append(f"--signal={req.checkpoint_signal}@{max(1, req.checkpoint_grace_s)}")
    if req.partition:
        opts.append(f"--partition={req.partition}")
    if req.account:
        opts.append(f"--account={req.account}")
    if req.workdir:
        opts.append(f"--chdir={req.workdir}")
    return opts


# Runs as each task: Slurm's per-task facts become virtuai's variables, then the command.
_TASK_WRAPPER = (
    'export RANK="$SLURM_PROCID" VIRTUAI_TASK_INDEX="$SLURM_PROCID" '
    'LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS" '
    'LOCAL_WORLD_SIZE="${SLURM_NTASKS_PER_NODE%%(*}" VIRTUAI_NODE="$SLURMD_NODENAME"; '
    'exec "$@"'
)


def batch_script(req: BatchRequest) -> str:
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in sbatch_options(req)]
    lines.append("# written by virtuai: one attempt of one job")
    for name, value in sorted(req.env.items()):
        if name in PER_TASK_VARS or not name.replace("_", "a").isalnum():
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    lines.append('MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
    lines.append("export MASTER_ADDR")
    srun = [
        "srun",
        "--kill-on-bad-exit=1",
        f"--output={req.log_dir}/vai-{req.key}.%t.out",
        f"--error={req.log_dir}/vai-{req.key}.%t.err",
        "/bin/bash",
        "-c",
        _TASK_WRAPPER,
        "virtuai-task",
        *req.command,
    ]
    lines.append(" ".join(shlex.quote(part) for part in srun))
    return "\n".join(lines) + "\n"


def sbatch_command(req: BatchRequest) -> str:
    """Submit the script on stdin; prints the Slurm job id.  Only for an attempt known not
    to be on the site (``SlurmSiteDriver`` knows it from its recovery index)."""
    dirs = " ".join(shlex.quote(d) for d in (req.log_dir, req.workdir) if d)
    return f"mkdir -p {dirs} && sbatch --parsable"


def recovery_command(token: str) -> str:
    """Every job of this installation on the site, queued or in accounting: ``id|comment``."""
    want = shlex.quote(f"virtuai:{token}:")
    return (
        "{ squeue -h --me -t all -o '%i|%k'; "
        'sacct -n -X -P -u "$USER" -S now-30days -o JobIDRaw,Comment 2>/dev/null; } | '
        f"awk -F'|' -v p={want} 'index($2, p) == 1'"
    )


def submit_command(req: BatchRequest) -> str:
    """Look the attempt up (queue, then accounting); submit the script on stdin only if absent.

    Prints the Slurm job id.  One round trip: what makes a crash between sbatch
    and recording its id harmless is that the lookup and the submit are one step.
    """
    name = shlex.quote(job_name(req.key))
    want = shlex.quote(comment(req.token, req.key))
    dirs = " ".join(shlex.quote(d) for d in (req.log_dir, req.workdir) if d)
    return (
        f"mkdir -p {dirs} && "
        f"id=$(squeue -h --me --name={name} -t all -o '%i|%k' | "
        f"awk -F'|' -v c={want} '$2==c {{print $1; exit}}'); "
        f'[ -n "$id" ] || id=$(sacct -n -X -P --name={name} -S now-30days -o JobIDRaw,Comment '
        f"2>/dev/null | awk -F'|' -v c={want} '$2==c {{print $1; exit}}'); "
        f'if [ -n "$id" ]; then echo "found $id"; else sbatch --parsable; fi'
    )
