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

A job of ``virtuai sbatch`` (``NativeBatch``) is not a gang step: its script's own
sizes become the Slurm job's (``-N 2`` is ``--nodes=2``, whatever virtuai's
placement), and the runner is exec'd as Slurm's batch step, so the script's
``srun`` is the site's, natively, with the allocation's resources free for it.
The runner links the script's output files at ``vai-<key>.0.out|err``.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtuai.slurmrun.command import LOG_PREFIX_ENV, NATIVE_ENV

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
class NativeBatch:
    """A ``virtuai sbatch`` script's resolved sizes, for the site's own sbatch."""

    name: str
    nodes: int
    ntasks: int
    ntasks_per_node: int
    cpus_per_task: int
    gpus_per_node: int = 0
    gpus_per_task: int = 0
    gpu_type: str = ""
    signal: str = ""  # "[B:]SIG@T", Slurm's own --signal


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
    native: NativeBatch | None = None


def sbatch_options(req: BatchRequest) -> list[str]:
    if req.native is not None:
        return native_options(req, req.native)
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
    return opts + _where(req)


def native_options(req: BatchRequest, native: NativeBatch) -> list[str]:
    """The script's sizes as Slurm's options (memory and time as virtuai holds them)."""
    opts = [
        f"--job-name={_directive_word(native.name)}",
        f"--comment={comment(req.token, req.key)}",
        f"--time={max(1, math.ceil(req.walltime_s / 60))}",
        f"--nodes={native.nodes}",
        f"--ntasks={native.ntasks}",
    ]
    if native.ntasks == native.nodes * native.ntasks_per_node:
        opts.append(f"--ntasks-per-node={native.ntasks_per_node}")
    opts += [
        f"--cpus-per-task={native.cpus_per_task}",
        f"--mem={max(1, math.ceil(req.memory / MIB))}M",  # per node, as the job holds it
        f"--output={req.log_dir}/vai-{req.key}.batch.out",
        "--no-requeue",  # virtuai requeues: a new attempt is a new Slurm job
        "--kill-on-invalid-dep=yes",
    ]
    kind = f"{native.gpu_type}:" if native.gpu_type else ""
    if native.gpus_per_task:
        opts.append(f"--gpus-per-task={kind}{native.gpus_per_task}")
    elif native.gpus_per_node:
        opts.append(f"--gres=gpu:{kind}{native.gpus_per_node}")
    if native.signal:
        opts.append(f"--signal={native.signal}")
    return opts + _where(req)


def _where(req: BatchRequest) -> list[str]:
    """Partition, account and working directory: the same for every kind of batch job."""
    opts = [f"--partition={req.partition}"] if req.partition else []
    if req.account:
        opts.append(f"--account={req.account}")
    if req.workdir:
        opts.append(f"--chdir={req.workdir}")
    return opts


def _directive_word(text: str) -> str:
    """One word of an #SBATCH line, as sbatch splits it (double quotes group)."""
    if text and all(c.isalnum() or c in "._+-@" for c in text):
        return text
    return '"' + "".join(c for c in text if c not in '"\\\n\r') + '"'


def log_prefix(req: BatchRequest) -> str:
    return f"{req.log_dir}/vai-{req.key}.0"


def _script_head(req: BatchRequest, what: str) -> list[str]:
    """The lines both kinds of batch script begin with: options, what wrote it, the env."""
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in sbatch_options(req)]
    lines.append(f"# written by virtuai: {what}")
    for name, value in sorted(req.env.items()):
        if name in PER_TASK_VARS or not _env_name(name):
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines


# The allocation's first node, as torchrun's and accelerate's rendezvous want it.
_MASTER_ADDR = [
    'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    "export MASTER_ADDR",
]


def native_script(req: BatchRequest) -> str:
    """The runner as Slurm's batch step (no srun): the script's own sruns are the job's."""
    lines = _script_head(req, "one attempt of one job of virtuai sbatch")
    lines.append(f"export {NATIVE_ENV}=1 {LOG_PREFIX_ENV}={shlex.quote(log_prefix(req))}")
    lines += _MASTER_ADDR
    lines.append("exec " + " ".join(shlex.quote(part) for part in req.command))
    return "\n".join(lines) + "\n"


def _env_name(name: str) -> bool:
    return name.replace("_", "a").isalnum()


# Runs as each task: Slurm's per-task facts become virtuai's variables, then the command.
_TASK_WRAPPER = (
    'export RANK="$SLURM_PROCID" VIRTUAI_TASK_INDEX="$SLURM_PROCID" '
    'LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS" '
    'LOCAL_WORLD_SIZE="${SLURM_NTASKS_PER_NODE%%(*}" VIRTUAI_NODE="$SLURMD_NODENAME"; '
    'exec "$@"'
)


def batch_script(req: BatchRequest) -> str:
    if req.native is not None:
        return native_script(req)
    lines = _script_head(req, "one attempt of one job") + _MASTER_ADDR
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
    return f"{_prepare(req)} && sbatch --parsable"


def _prepare(req: BatchRequest) -> str:
    """Make the directories; sbatch runs in the working directory (``SLURM_SUBMIT_DIR``)."""
    dirs = " ".join(shlex.quote(d) for d in (req.log_dir, req.workdir) if d)
    return f"mkdir -p {dirs}" + (f" && cd {shlex.quote(req.workdir)}" if req.workdir else "")


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
    name = shlex.quote(req.native.name if req.native is not None else job_name(req.key))
    want = shlex.quote(comment(req.token, req.key))
    return (
        f"{_prepare(req)} && "
        f"id=$(squeue -h --me --name={name} -t all -o '%i|%k' | "
        f"awk -F'|' -v c={want} '$2==c {{print $1; exit}}'); "
        f'[ -n "$id" ] || id=$(sacct -n -X -P --name={name} -S now-30days -o JobIDRaw,Comment '
        f"2>/dev/null | awk -F'|' -v c={want} '$2==c {{print $1; exit}}'); "
        f'if [ -n "$id" ]; then echo "found $id"; else sbatch --parsable; fi'
    )
