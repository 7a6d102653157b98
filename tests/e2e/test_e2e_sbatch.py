"""Slurm scripts run unchanged on a real `virtuai up`: batch step, SLURM_*, srun, --signal.

The scripts are submitted with the real CLI from a submit directory the
tenant's user can write; Slurm's output file appears there.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import CLI, Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, tenant users)")

TENANTS = ["slurmers"]
TORCHRUN_LIKE = """#!/bin/bash
#SBATCH --job-name=ddp_smoke
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --mem=256M
#SBATCH --time=00:02:00
#SBATCH --array=3-4
##SBATCH --time=99

nodes=( $( scontrol show hostnames $SLURM_JOB_NODELIST ) )
head_node=${nodes[0]}
echo "head=$head_node nodelist=$SLURM_JOB_NODELIST"
echo "job=$SLURM_JOB_ID array=$SLURM_ARRAY_JOB_ID" \
  "task=$SLURM_ARRAY_TASK_ID count=$SLURM_ARRAY_TASK_COUNT"
echo "ntasks=$SLURM_NTASKS nnodes=$SLURM_NNODES mem=$SLURM_MEM_PER_NODE cpus=$SLURM_CPUS_PER_TASK"
echo "submit=$SLURM_SUBMIT_DIR pwd=$(pwd) restart=$SLURM_RESTART_COUNT args=$*"
srun -l bash -c 'echo "rank $SLURM_PROCID of $SLURM_NTASKS local $SLURM_LOCALID"' | sort
"""
TRAP = """#!/bin/bash
#SBATCH --time=1
#SBATCH --signal=B:USR1@58
#SBATCH --output=trap-%j.log
trap 'echo "caught USR1 in $SLURM_JOB_NAME"; exit 0' USR1
echo started
sleep 50 &
wait
echo "no signal came"
exit 1
"""

REQUEUE = """#!/bin/bash
#SBATCH --time=1
#SBATCH --signal=B:USR1@58
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=requeue-%j.log
if [ "$SLURM_RESTART_COUNT" -gt 0 ]; then
  echo "run $SLURM_RESTART_COUNT: resumed from checkpoint $(cat ckpt-$SLURM_JOB_ID)"
  exit 0
fi
handler() {
  echo "caught USR1: checkpoint and requeue"
  echo 42 > ckpt-$SLURM_JOB_ID
  scontrol requeue $SLURM_JOB_ID
}
trap handler USR1
echo "run 0 started"
sleep 50 &
wait
sleep 50 &
wait
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    workspaces = public_dir("vai-e2e-sb-ws-")
    server = Server(
        tmp_path / "home",
        tmp_path / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__CPU": "4",
            "VIRTUAI_LOCAL__MEMORY": "4Gi",
            "VIRTUAI_LOCAL__KILL_GRACE_S": "1",
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
            "VIRTUAI_LOCAL__CGROUP_NAME": f"virtuai-e2e-{uuid.uuid4().hex[:6]}",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
        },
    )
    server.start()
    server.cli("tenant", "create", TENANTS[0], "--cpu", "4", "--memory", "4Gi")
    yield server
    if server.process and server.process.poll() is None:
        server.kill()
    remove_state(workspaces, TENANTS)


@pytest.fixture
def submit_dir() -> Iterator[Path]:
    directory = public_dir("vai-e2e-sb-submit-")
    directory.chmod(0o777)  # the tenant's user writes Slurm's output file here
    yield directory
    remove_state(directory, [])


def sbatch(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "sbatch", "-A", TENANTS[0], *args],
        env=server.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_torchrun_style_array_runs_unchanged(server: Server, submit_dir: Path) -> None:
    (submit_dir / "ddp.sh").write_text(TORCHRUN_LIKE)
    done = sbatch(server, submit_dir, "--wait", "ddp.sh", "--lr", "0.1")
    assert done.returncode == 0, done.stderr
    array_id = int(done.stdout.removeprefix("Submitted batch job ").strip())
    outputs = sorted(submit_dir.glob(f"slurm-{array_id}_*.out"))
    assert [p.name for p in outputs] == [f"slurm-{array_id}_3.out", f"slurm-{array_id}_4.out"]
    text = outputs[1].read_text()
    host = os.uname().nodename.split(".")[0]
    assert f"head={host} nodelist={host}" in text
    assert f"array={array_id} task=4 count=2" in text
    assert "ntasks=2 nnodes=1 mem=256 cpus=1" in text
    assert f"submit={submit_dir} pwd={submit_dir} restart=0 args=--lr 0.1" in text
    assert "0: rank 0 of 2 local 0\n1: rank 1 of 2 local 1\n" in text
    # The habits see them with Slurm's ids and states.
    listed = server.cli("squeue", "-t", "all", "-h", "-o", "%i %t %j")
    # (names as virtuai keeps them: a DNS label, so ddp_smoke is ddp-smoke)
    assert f"{array_id}_3 CD ddp-smoke" in listed and f"{array_id}_4 CD ddp-smoke" in listed
    acct = server.cli("sacct", "-j", str(array_id), "-X", "-n", "--format", "JobID%20,State")
    assert [line.split() for line in acct.splitlines()] == [
        [f"{array_id}_3", "COMPLETED"],
        [f"{array_id}_4", "COMPLETED"],
    ]


def test_signal_before_the_time_limit_reaches_the_trap(server: Server, submit_dir: Path) -> None:
    (submit_dir / "trap.sh").write_text(TRAP)
    done = sbatch(server, submit_dir, "--wait", "--parsable", "trap.sh")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert (submit_dir / f"trap-{job_id}.log").read_text() == "started\ncaught USR1 in trap.sh\n"


def test_test_only_asks_the_server(server: Server, submit_dir: Path) -> None:
    (submit_dir / "big.sh").write_text("#!/bin/sh\n#SBATCH -c 64 -p nowhere\nrun\n")
    result = sbatch(server, submit_dir, "--test-only", "big.sh")
    assert result.returncode == 1
    assert "would not run: partition 'nowhere' is no pool or site here" in result.stdout
    (submit_dir / "odd.sh").write_text("#!/bin/sh\n#SBATCH -c 64\nrun\n")
    for args, words in (
        (("-A", TENANTS[0]), "64 cpu"),
        (("-A", TENANTS[0], "--qos", "platinum", "-c", "1"), "platinum"),
        (("-A", "nobody", "-c", "1"), "nobody"),
    ):
        result = subprocess.run(
            [*CLI, "sbatch", "--test-only", "--json", *args, "odd.sh"],
            env=server.env,
            cwd=submit_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        answer = json.loads(result.stdout)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert answer["server_checked"] is True
        assert any(words in reason for reason in answer["would_not_run"]), answer["would_not_run"]


def test_trap_and_requeue_runs_again_from_the_checkpoint(server: Server, submit_dir: Path) -> None:
    (submit_dir / "requeue.sh").write_text(REQUEUE)
    submitted = sbatch(server, submit_dir, "--parsable", "requeue.sh")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    done = subprocess.run(
        [*CLI, "wait", job_id, "--timeout", "90"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (submit_dir / f"requeue-{job_id}.log").read_text() == (
        "run 0 started\ncaught USR1: checkpoint and requeue\nrun 1: resumed from checkpoint 42\n"
    )
    job = server.json("job", job_id)
    assert job["restart_count"] == 1
    assert any("requeue requested" in e["reason"] for e in job["events"])


TWO_NODES = """#!/bin/bash
#SBATCH --job-name=two-nodes
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --mem=256M
#SBATCH --time=00:02:00

nodes=( $( scontrol show hostnames "$SLURM_JOB_NODELIST" ) )
echo "nnodes=$SLURM_NNODES ntasks=$SLURM_NTASKS listed=${#nodes[@]} head=${nodes[0]}"
srun -l bash -c 'echo "rank $SLURM_PROCID node $SLURM_NODEID local $SLURM_LOCALID"' | sort
# Environment-based rendezvous (what torch.distributed's env:// does): rank 0 listens on
# MASTER_ADDR:MASTER_PORT, the rank on the other node connects and says who it is.
srun --ntasks-per-node=1 -l python3 -c '
import os, socket
addr, port, rank = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), os.environ["RANK"]
if rank == "0":
    with socket.create_server((addr, port)) as server:
        conn, _ = server.accept()
        print("rank 0 heard:", conn.recv(64).decode())
else:
    for _ in range(100):
        try:
            socket.create_connection((addr, port)).sendall(f"rank {rank}".encode())
            break
        except OSError:
            __import__("time").sleep(0.1)
' | sort
srun -l bash -c '[ "$SLURM_PROCID" = 3 ] && exit 9; true'
echo "step with a failing rank: $?"
"""

WAIT_FOR_FILE = "#!/bin/sh\nwhile [ ! -f release ]; do sleep 0.1; done\necho done\n"


def test_a_two_node_job_runs_its_steps_on_both_nodes(server: Server, submit_dir: Path) -> None:
    (submit_dir / "two.sh").write_text(TWO_NODES)
    done = sbatch(server, submit_dir, "--wait", "--parsable", "two.sh")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    text = (submit_dir / f"slurm-{job_id}.out").read_text()
    host = os.uname().nodename.split(".")[0]
    assert f"nnodes=2 ntasks=4 listed=2 head={host}\n" in text
    assert "".join(f"{r}: rank {r} node {r // 2} local {r % 2}\n" for r in range(4)) in text
    assert "0: rank 0 heard: rank 1\n" in text
    assert "srun: error: " in text and "task 3: Exited with exit code 9" in text
    assert "step with a failing rank: 9\n" in text
    job = server.json("job", job_id)
    assert job["tasks"] == 2 and job["state"] == "succeeded"


def test_singleton_any_of_and_after_dependencies(server: Server, submit_dir: Path) -> None:
    (submit_dir / "wait.sh").write_text(WAIT_FOR_FILE)
    (submit_dir / "quick.sh").write_text("#!/bin/sh\necho quick\n")
    first = sbatch(server, submit_dir, "--parsable", "-J", "nightly", "wait.sh")
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip()
    single = sbatch(
        server, submit_dir, "--parsable", "-J", "nightly", "-d", "singleton", "quick.sh"
    )
    after = sbatch(server, submit_dir, "--parsable", "-d", f"after:{first_id}", "quick.sh")
    either = sbatch(
        server,
        submit_dir,
        "--parsable",
        "-d",
        f"afternotok:{first_id}?after:{first_id}",
        "quick.sh",
    )
    ids = [p.stdout.strip() for p in (single, after, either)]
    assert all(p.returncode == 0 for p in (single, after, either)), [
        p.stderr for p in (single, after, either)
    ]
    for job_id in ids[1:]:
        wait_job(server, job_id)
    assert server.json("job", ids[0])["state"] == "pending"
    queue = server.cli("squeue", "-h", "-o", "%i %t %r", "-j", ids[0])
    assert queue.split() == [ids[0], "PD", "Dependency"]
    (submit_dir / "release").touch()
    for job_id in (first_id, ids[0]):
        wait_job(server, job_id)


def wait_job(server: Server, job_id: str) -> None:
    done = subprocess.run(
        [*CLI, "wait", job_id, "--timeout", "60"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
