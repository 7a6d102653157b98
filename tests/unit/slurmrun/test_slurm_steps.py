"""Multi-node jobs as their tasks run them: one batch task (the hub) and step agents.

Each task is a real process started exactly as the job's command starts it, with the
environment virtuai gives a gang's tasks (``VIRTUAI_TASK_INDEX``, ``MASTER_ADDR``,
``MASTER_PORT``, the job token); they find each other over loopback TCP.  No server.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from support import mpi as mpi_program
from virtuai.cli.slurmjob import runner_source
from virtuai.slurmrun.command import BOOTSTRAP, PYTHON, RUNNER_ENV

TOKEN = "vaij_88_0_" + "ab" * 32
CONFIG: dict[str, Any] = {
    "name": "multi",
    "ntasks": 6,
    "ntasks_per_node": 2,
    "cpus_per_task": 1,
    "mem_per_node": 2**30,
    "submit_dir": "/home/ada",
    "submit_host": "login1",
    "user": "ada",
    "output": "slurm-%j.out",
    "error": "slurm-%j.out",
    "open_mode": "truncate",
    "time_limit_s": 600,
    "signal": None,
    "array": None,
    "partition": None,
    "qos": None,
    "join_timeout_s": 20,
}
SOURCE = base64.b64encode(zlib.compress(runner_source().encode())).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_tasks(
    tmp: Path, script: str, tasks: int, config: dict[str, Any] = CONFIG, **per_task: list[str]
) -> list[subprocess.Popen[bytes]]:
    """The gang's tasks, agents first (the hub is late, as a slow launch would be)."""
    port = free_port()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for index in [*range(1, tasks), 0]:
        env = {
            "PATH": "/usr/bin:/bin",
            "VIRTUAI_JOB_ID": "88",
            "VIRTUAI_TASK_INDEX": str(index),
            "VIRTUAI_NUM_TASKS": str(tasks),
            "VIRTUAI_JOB_TOKEN": TOKEN,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "CUDA_VISIBLE_DEVICES": str(index),
            RUNNER_ENV: SOURCE,
        }
        for name, values in per_task.items():
            env[name] = values[index]
        command = [PYTHON, "-c", BOOTSTRAP, "batch", json.dumps(config), script]
        procs[index] = subprocess.Popen(command, env=env, cwd=tmp, start_new_session=True)
        if index == tasks - 1:
            time.sleep(0.3)
    return [procs[i] for i in range(tasks)]


def wait_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    try:
        return [p.wait(timeout=60) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_the_batch_script_runs_once_and_srun_reaches_every_node(tmp_path: Path) -> None:
    script = """#!/bin/bash
echo "nnodes=$SLURM_NNODES ntasks=$SLURM_NTASKS nodeid=$SLURM_NODEID port=$MASTER_PORT"
scontrol show hostnames "$SLURM_JOB_NODELIST" | wc -l
srun -l bash -c 'echo "node=$SLURM_NODEID local=$SLURM_LOCALID gpu=$CUDA_VISIBLE_DEVICES" \
  "rank=$RANK/$WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT"; echo "err $SLURM_PROCID" >&2' | sort
srun -N 2 -r 1 -l bash -c 'printf "no newline from $SLURM_NODEID"' | sort; echo
srun -n 3 -l bash -c 'exit $SLURM_PROCID'; echo "exit of a step whose rank 2 failed: $?"
srun --ntasks-per-node=1 bash -c '[ "$SLURM_NODEID" = 2 ] && kill -9 $$; true'
echo "killed rank: $?"
srun -N 1 -r 2 false; echo "remote false: $?"
srun -N 1 -r 2 /no/such/program; echo "no program: $?"
srun -K -l bash -c '[ "$SLURM_PROCID" = 5 ] && exit 3; sleep 30'; echo "-K: $?"
srun --mpi=pmix3 true; echo "unknown mpi: $?"
srun -n 1 -l bash -c 'echo "one task: $SLURM_STEP_NUM_NODES node(s), $SLURM_STEP_NODELIST"'
exit 4
"""
    # Node 0 reaches itself at 127.0.0.2, the others reach it at 127.0.0.1 (as tasks on
    # two machines see the first one at two addresses): each rank gets its node's.
    codes = wait_all(
        start_tasks(tmp_path, script, 3, MASTER_ADDR=["127.0.0.2", "127.0.0.1", "127.0.0.1"])
    )
    assert codes == [4, 0, 0]  # the script's status; the agents end cleanly
    lines = (tmp_path / "slurm-88.out").read_text().splitlines()
    first = lines[0].split()
    assert first[:3] == ["nnodes=3", "ntasks=6", "nodeid=0"]
    assert first[3] != "port=" and lines[1] == "3"
    port = first[3].removeprefix("port=")
    ranks = [line for line in lines if "node=" in line]
    assert ranks == [
        f"{r}: node={r // 2} local={r % 2} gpu={r // 2} rank={r}/6 "
        f"master=127.0.0.{2 if r < 2 else 1}:{port}"
        for r in range(6)
    ]
    errors = [line for line in lines if line.startswith(tuple(f"{r}: err" for r in range(6)))]
    assert sorted(errors) == [f"{r}: err {r}" for r in range(6)]  # stderr: not sorted
    assert "0: no newline from 1" in lines and "1: no newline from 2" in lines
    assert "exit of a step whose rank 2 failed: 2" in lines
    assert "killed rank: 137" in lines
    assert "remote false: 1" in lines
    assert "no program: 2" in lines
    assert any("execve(): /no/such/program" in line for line in lines)
    # -K: the remote rank 5 fails, every other rank (here and there) is killed at once.
    assert "-K: 3" in lines
    assert "srun: error: task 5 failed: terminating the step (-K)" in lines
    assert any(line.endswith("task 0: Exited with exit code 137") for line in lines)
    assert "unknown mpi: 1" in lines
    assert any("--mpi=pmix3: unknown MPI type" in line for line in lines)
    host = socket.gethostname().split(".")[0]
    assert f"0: one task: 1 node(s), {host}" in lines


def test_a_peer_without_the_token_never_joins(tmp_path: Path) -> None:
    config = {**CONFIG, "join_timeout_s": 3}
    hub, agent = start_tasks(
        tmp_path,
        "#!/bin/sh\necho ran\n",
        2,
        config,
        VIRTUAI_JOB_TOKEN=[TOKEN, "vaij_88_0_" + "cd" * 32],
    )
    assert wait_all([hub, agent]) == [1, 1]
    assert not (tmp_path / "slurm-88.out").exists()  # the script never ran


def test_a_lost_node_fails_the_step(tmp_path: Path) -> None:
    script = """#!/bin/bash
srun -l bash -c 'touch started-$SLURM_NODEID; [ "$SLURM_NODEID" = 0 ] || sleep 30'
echo "lost: $?"
"""
    config = {**CONFIG, "ntasks": 2, "ntasks_per_node": 1}
    hub, agent = start_tasks(tmp_path, script, 2, config)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started-1").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(agent.pid, signal.SIGKILL)
    assert wait_all([hub, agent]) == [0, -9]
    text = (tmp_path / "slurm-88.out").read_text()
    assert "lost: 255" in text
    assert "1: srun: error: node 1: its task is gone; rank 1 lost" in text


@pytest.mark.parametrize("nodes", [2])
def test_without_a_job_token_a_multi_node_job_says_why(tmp_path: Path, nodes: int) -> None:
    hub, agent = start_tasks(tmp_path, "#!/bin/sh\necho ran\n", nodes, VIRTUAI_JOB_TOKEN=["", ""])
    assert wait_all([hub, agent]) == [1, 1]


def test_a_step_key_lets_nodes_with_different_job_tokens_meet(tmp_path: Path) -> None:
    """Two machines with their own job-token keys give a job two tokens; sbatch's step key
    is the same in every task."""
    key = "5e" * 32
    tasks = start_tasks(
        tmp_path,
        "#!/bin/sh\nsrun -l sh -c 'echo $VIRTUAI_SLURM_STEP_KEY.' | sort\n",
        2,
        {**CONFIG, "ntasks": 2, "ntasks_per_node": 1},
        VIRTUAI_JOB_TOKEN=[TOKEN, "vaij_88_0_" + "cd" * 32],
        VIRTUAI_SLURM_STEP_KEY=[key, key],
    )
    assert wait_all(tasks) == [0, 0]
    # The key does not travel into the script nor its ranks.
    assert (tmp_path / "slurm-88.out").read_text() == "0: .\n1: .\n"


@pytest.mark.slow
def test_srun_mpi_pmix_makes_one_mpi_world_across_the_nodes(tmp_path: Path) -> None:
    """A real MPI program (an allreduce) in a step over two "nodes": Open MPI's mpirun
    with this runner as its remote-launch agent (``slurmrun/mpi.py``); ``--mpi=pmi2``
    and ``-l`` too, and a failed rank's code is the step's."""
    hello = mpi_program.build(tmp_path / "mpi")
    script = f"""#!/bin/bash
srun -l --mpi=pmix {hello} | sort
srun --mpi=pmi2 -n 3 bash -c 'echo "$SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $RANK/$WORLD_SIZE"' |
  sort
srun --mpi=pmi2 -n 3 bash -c 'exit $(( SLURM_PROCID == 2 ? 3 : 0 ))'
echo "exit of the pmi2 step: $?"
"""
    # (A failed rank makes mpirun stop the others: its own step, so no rank's line is lost.)
    config = {**CONFIG, "ntasks": 4}
    assert wait_all(start_tasks(tmp_path, script, 2, config)) == [0, 0]
    lines = (tmp_path / "slurm-88.out").read_text().splitlines()
    assert [line for line in lines if ": rank " in line] == [
        f"{r}: rank {r} of 4 on node {r // 2} sum 10" for r in range(4)
    ]
    assert [line for line in lines if "/3" in line] == ["0 0 0 0/3", "1 1 0 1/3", "2 0 1 2/3"]
    assert "exit of the pmi2 step: 3" in lines
