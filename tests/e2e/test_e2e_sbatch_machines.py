"""A two-node Slurm script over two machines: real `virtuai up` instances in their own
network namespaces (``support.netcluster``), each with its own job-token key.

Each node's task needs all of its machine's CPUs, so the gang spans both; the step
agent on the second machine joins the batch task on the first over the bridge.  An
MPI step (``srun --mpi=pmix``) makes one MPI world of ranks on both machines.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import mpi as mpi_program
from support.netcluster import NetCluster, can_run
from virtuai.cli.slurmjob import job_body
from virtuai.slurmfront.resolve import Context, resolve

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.skipif(can_run() is not None, reason=str(can_run())),
]

SCRIPT = """#!/bin/bash
#SBATCH -N 2 --ntasks-per-node=1 -c 2 --mem=256M -t 2
echo "nnodes=$SLURM_NNODES ntasks=$SLURM_NTASKS"
srun -l bash -c 'echo "node $SLURM_NODEID on $VIRTUAI_NODE master $MASTER_ADDR"' | sort
# Rank 0 listens on every address (as torch's TCPStore does); rank 1 connects to its
# MASTER_ADDR, which is how its own machine reaches the first one.
srun -l python3 -c '
import os, socket, time
port, rank = int(os.environ["MASTER_PORT"]), os.environ["RANK"]
if rank == "0":
    with socket.create_server(("", port)) as server:
        conn, _ = server.accept()
        print("rank 0 heard:", conn.recv(64).decode())
else:
    for _ in range(300):  # up to 30 s: rank 0 may start late on a loaded machine
        try:
            socket.create_connection((os.environ["MASTER_ADDR"], port)).sendall(b"rank 1")
            break
        except OSError:
            time.sleep(0.1)
' | sort
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetCluster]:
    net = NetCluster(Path(tempfile.mkdtemp(prefix="vai-netcluster-sb-")), size=2)
    try:
        net.start()
        yield net
    finally:
        net.stop()


def test_srun_reaches_the_node_on_the_other_machine(cluster: NetCluster) -> None:
    res = resolve(SCRIPT, [], Context("two.sh", "/home/ann", "ann", {}))
    body, _notes = job_body(
        res, SCRIPT, env={}, submit_dir="/home/ann", submit_host="login", user="ann", local=False
    )
    job = cluster.user("POST", "/api/v1/jobs", json=body)
    done = cluster.wait([job["id"]], timeout=120)[job["id"]]
    output = cluster.public / "workspaces" / "lab" / f"slurm-{job['id']}.out"
    # On failure say why: the job's reason, its tasks' ends and what the script printed.
    assert done["state"] == "succeeded", (
        done["reason"],
        [(r["index"], r["node"], r["outcome"], r["exit_code"], r["message"])
         for r in done.get("task_runs", [])],
        output.read_text() if output.exists() else "(no output file)",
    )  # fmt: skip
    nodes = [p["node"] for p in sorted(done["placement"], key=lambda p: p["index"])]
    assert sorted(nodes) == ["n1", "n2"]
    first = next(i for i in cluster.instances if i.name == nodes[0])
    deadline = time.monotonic() + 10
    while not output.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert output.read_text().splitlines() == [
        "nnodes=2 ntasks=2",
        f"0: node 0 on {nodes[0]} master 127.0.0.1",
        f"1: node 1 on {nodes[1]} master {first.address}",
        "0: rank 0 heard: rank 1",
    ]


MPI_SCRIPT = """#!/bin/bash
#SBATCH -N 2 --ntasks-per-node=2 -c 1 --mem=256M -t 2
srun -l --mpi=pmix {hello} | sort
"""


@pytest.mark.slow
def test_an_mpi_step_is_one_world_over_both_machines(cluster: NetCluster) -> None:
    """``srun --mpi=pmix``: Open MPI's orteds started through the step agents, the
    ranks' allreduce over the bridge between the two machines' namespaces."""
    hello = mpi_program.build(cluster.public / "mpi")
    script = MPI_SCRIPT.format(hello=hello)
    res = resolve(script, [], Context("mpi.sh", "/home/ann", "ann", {}))
    body, _notes = job_body(
        res, script, env={}, submit_dir="/home/ann", submit_host="login", user="ann", local=False
    )
    job = cluster.user("POST", "/api/v1/jobs", json=body)
    done = cluster.wait([job["id"]], timeout=180)[job["id"]]
    output = cluster.public / "workspaces" / "lab" / f"slurm-{job['id']}.out"
    text = output.read_text() if output.exists() else "(no output file)"
    assert done["state"] == "succeeded", (done["reason"], text)
    assert [line for line in text.splitlines() if ": rank " in line] == [
        f"{r}: rank {r} of 4 on node {r // 2} sum 10" for r in range(4)
    ]
