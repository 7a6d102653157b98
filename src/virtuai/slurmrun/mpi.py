"""``srun --mpi=pmix`` (and ``pmi2``) in virtuai's own srun: Open MPI's runtime wires the ranks.

virtuai runs no PMIx (or PMI-2) server of its own.  A step that asks for one is started
as Open MPI's ``mpirun``, which brings its own: ``mpirun`` gets a hostfile of the step's
nodes (``vai-node-<N>``, N the node's index in the allocation, with as many slots as srun
puts ranks there) and *this runner* as its remote-launch agent (``plm_rsh_agent``).  For
each node mpirun calls ``mpi-agent vai-node-<N> orted ...``; the agent runs that ``orted``
through the same path srun's ranks take (a local process on node 0, the hub and the node's
step agent elsewhere), and each orted is the PMIx server of its node's ranks.  So no new
port, daemon or trust: the orteds reach mpirun over TCP as the ranks reach each other.

Details that matter:
- mpirun must not read Slurm's allocation (``ras ^slurm``, ``plm rsh``): it would find
  the SLURM_* of virtuai's batch step, and the hostfile is the truth.  Host names are
  never resolved (``if_base_do_not_resolve``): the synthetic names exist in no DNS.
- Each orted gets a session directory (``TMPDIR``) and a shared-memory backing
  directory of its own, under its node's private step directory: two "nodes" of one job
  may share a kernel and a /tmp (two virtuai machines on one host, tests), and Open MPI
  names its files by host name, job and *local* rank, which would then collide.
- The orteds stay attached (``orte_leave_session_attached``): they are the step's
  processes, killed with it, not daemons that outlive it.
- Each rank starts through a one-line shell prelude that sets Slurm's per-rank variables
  (``SLURM_PROCID``, ``SLURM_LOCALID``, ``RANK``, ...) from Open MPI's own.

Open MPI 4 (ORTE, Debian bookworm's ``openmpi-bin``) only: Open MPI 5's mpirun is PRRTE's,
with other parameter names, and MPICH's hydra has its own; both are refused clearly.
Standard library only: shipped with the job's runner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

# Slurm 22.05's --mpi types; all but "none" mean "wire the ranks up".
MPI_TYPES = ("none", "pmi2", "pmix", "pmix_v3", "pmix_v4", "cray_shasta")
NODE_PREFIX = "vai-node-"
# The node's private step directory (made and removed by the batch step or step agent).
NODE_TMP_ENV = "VIRTUAI_SLURM_NODE_TMP"
STEP_ENV = "VIRTUAI_SLURM_MPI_STEP"
GPUS_ENV = "VIRTUAI_MPI_GPUS_PER_TASK"
AGENT = "mpi-agent"
_VERSION_RE = re.compile(r"\(Open MPI\)\s+(\d+)\.(\d+)")
# mpirun's parent setpgid()s the agent after fork and loses the race when the agent has
# already exec'd: harmless (the child did it itself), printed anyway.
_NOISE = re.compile(rb"^\[[^]]*\] plm:rsh: Warning: setpgid\(.*\n?$")
_TAG_RE = re.compile(rb"^\[\d+,(\d+)\]<std(?:out|err)>:(.*)$", re.DOTALL)

# Each rank: Slurm's per-rank variables from Open MPI's, its own GPUs (--gpus-per-task),
# then the command.
RANK_PRELUDE = (
    'r=$OMPI_COMM_WORLD_RANK; l=$OMPI_COMM_WORLD_LOCAL_RANK; g="${' + GPUS_ENV + ':-}"; '
    "export SLURM_PROCID=$r SLURM_LOCALID=$l PMI_RANK=$r RANK=$r LOCAL_RANK=$l "
    "PMI_SIZE=$OMPI_COMM_WORLD_SIZE WORLD_SIZE=$OMPI_COMM_WORLD_SIZE "
    "LOCAL_WORLD_SIZE=$OMPI_COMM_WORLD_LOCAL_SIZE; "
    'if [ -n "$g" ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then '
    'CUDA_VISIBLE_DEVICES=$(printf %s "$CUDA_VISIBLE_DEVICES" | '
    "cut -d, -f$((l * g + 1))-$((l * g + g))); "
    "export CUDA_VISIBLE_DEVICES SLURM_STEP_GPUS=$CUDA_VISIBLE_DEVICES "
    "SLURM_GPUS_PER_TASK=$g; fi; "
    'exec "$@"'
)
# Each orted: a session and shared-memory directory of its own on its node.  mpirun's
# words follow (``PATH=...; export PATH; ...; orted ...``, for a POSIX shell).
ORTED_PRELUDE = (
    'd=$(mktemp -d "${' + NODE_TMP_ENV + ':-${TMPDIR:-/tmp}}/mpi.XXXXXX") || exit 1; '
    "export TMPDIR=$d OMPI_MCA_btl_vader_backing_directory=$d; "
)


class MpiError(Exception):
    """This step cannot get the MPI wire-up it asked for (said as srun says it)."""


def wanted(option: str | None, env: Mapping[str, str]) -> str:
    """The step's MPI type: ``--mpi``, else ``SLURM_MPI_TYPE`` (as srun reads it), else none."""
    kind = (option or env.get("SLURM_MPI_TYPE") or "none").strip()
    if kind not in (*MPI_TYPES, "list"):
        raise MpiError(f"--mpi={kind}: unknown MPI type (Slurm 22.05's are {', '.join(MPI_TYPES)})")
    return kind


def find_mpirun(kind: str, env: Mapping[str, str]) -> str:
    """Open MPI 4's ``mpirun`` on the step's PATH; MpiError saying what to do otherwise."""
    mpirun = shutil.which("mpirun", path=env.get("PATH", os.defpath))
    if mpirun is None:
        raise MpiError(
            f"--mpi={kind}: no MPI runtime on this node. virtuai runs no PMIx/PMI-2 server "
            "of its own: it starts MPI steps with Open MPI's mpirun, which is not on the "
            "PATH (install Open MPI, e.g. Debian's openmpi-bin; or use --mpi=none: the ranks "
            "then get PMI_RANK, PMI_SIZE, RANK and WORLD_SIZE, but no PMI server)"
        )
    try:
        done = subprocess.run(
            [mpirun, "--version"],
            capture_output=True,
            env=dict(env),
            timeout=60,
            check=False,
        )
        text = (done.stdout + done.stderr).decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MpiError(f"--mpi={kind}: {mpirun} --version failed: {error}") from None
    match = _VERSION_RE.search(text)
    if match is None or match.group(1) != "4":
        found = text.strip().splitlines()[0] if text.strip() else "no version"
        raise MpiError(
            f"--mpi={kind}: {mpirun} is not Open MPI 4 ({found}); virtuai's srun starts "
            "MPI steps with Open MPI 4's mpirun only (run that MPI's own launcher in the "
            "script instead, or use --mpi=none)"
        )
    return mpirun


def hostfile_text(counts: Sequence[tuple[int, int]]) -> str:
    """``(allocation node index, ranks on it)`` in rank order -> an Open MPI hostfile."""
    return "".join(f"{NODE_PREFIX}{node} slots={count}\n" for node, count in counts)


def node_of(host: str) -> int:
    """The allocation index of a hostfile name (``vai-node-3`` -> 3)."""
    if not host.startswith(NODE_PREFIX) or not host[len(NODE_PREFIX) :].isdigit():
        raise MpiError(f"mpi-agent: {host!r} is not a node of this step")
    return int(host[len(NODE_PREFIX) :])


def mpirun_argv(
    mpirun: str, hostfile: str, agent: str, ntasks: int, command: Sequence[str], label: bool
) -> list[str]:
    mca = {
        "plm": "rsh",
        "plm_rsh_agent": agent,
        "plm_rsh_no_tree_spawn": "1",
        "ras": "^slurm",
        "if_base_do_not_resolve": "1",
        "orte_leave_session_attached": "1",
    }
    argv = [mpirun, "--hostfile", hostfile, "-np", str(ntasks), "--map-by", "slot"]
    argv += ["--bind-to", "none"]  # virtuai's cgroups confine the task; no core pinning
    for name, value in mca.items():
        argv += ["--mca", name, value]
    if label:
        argv.append("--tag-output")
    return [*argv, "/bin/sh", "-c", RANK_PRELUDE, "virtuai-rank", *command]


def orted_command(words: Sequence[str]) -> list[str]:
    """What runs on a node for ``mpi-agent HOST WORDS...``: as ssh would, the words joined
    into one shell command line, after the prelude."""
    return ["/bin/sh", "-c", ORTED_PRELUDE + " ".join(words)]


def agent_env(env: Mapping[str, str], node: int, host: str) -> dict[str, str]:
    """The orted's environment on ``node`` (its ranks inherit it): the step's, with the
    node's own ids; the GPUs per task are bound per rank by the prelude, not per orted."""
    out = dict(env)
    out.update({"SLURM_NODEID": str(node), "SLURMD_NODENAME": host})
    # mpirun's session directory is not the orted's (the prelude makes that one).
    for name in ("TMPDIR", "OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"):
        out.pop(name, None)
    return out


def mpirun_env(env: Mapping[str, str], work: str, step: int) -> dict[str, str]:
    """mpirun's environment: its session directory in ``work``; root allowed (as Slurm's
    srun allows it) when the task is root's."""
    out = dict(env)
    out["TMPDIR"] = work
    out[STEP_ENV] = str(step)
    per_task = out.pop("SLURM_GPUS_PER_TASK", "")
    if per_task:
        out[GPUS_ENV] = per_task
    if os.geteuid() == 0:
        out["OMPI_ALLOW_RUN_AS_ROOT"] = out["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return out


def filter_line(line: bytes, label: bool) -> bytes | None:
    """A line of mpirun's output as srun shows it: its noise dropped, ``--tag-output``'s
    ``[1,R]<stdout>:`` turned into ``-l``'s ``R: ``."""
    if _NOISE.match(line):
        return None
    if label and (match := _TAG_RE.match(line)):
        return match.group(1) + b": " + match.group(2)
    return line
