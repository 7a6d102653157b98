"""A multi-node Slurm script in a real virtual cluster: one gang task per cluster node.

The body is what ``virtuai sbatch --vc`` sends (``cli.slurmjob.job_body``); the nodes
are real network namespaces with their own host names and addresses, so ``srun``'s
ranks on the second node really run there, reached through the step agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_api_vclusters import create, make_platform, run, wait_vc

from support.platform import TEST_USER_PREFIX, Platform
from support.vclusters import can_run_vcs, close_runtime, make_runtime
from virtuai.cli.slurmjob import job_body
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
from virtuai.domain.clock import SystemClock
from virtuai.slurmfront.resolve import Context, resolve
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate
from virtuai.vcruntime import VcRuntime

pytestmark = pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs()))

SCRIPT = """#!/bin/bash
#SBATCH -N 2 --ntasks-per-node=2 -c 1 --mem=128M -t 2
echo "nodelist=$SLURM_JOB_NODELIST nnodes=$SLURM_NNODES on $(hostname)"
srun -l bash -c 'echo "$(hostname) node $SLURM_NODEID rank $SLURM_PROCID of $WORLD_SIZE"' | sort
srun -N 1 -r 1 bash -c 'exit 3'; echo "second node's step: $?"
"""


@pytest.fixture(scope="module")
def runtime() -> Iterator[VcRuntime]:
    rt = make_runtime(TEST_USER_PREFIX)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    was = forwarding.read_text()
    yield rt
    forwarding.write_text(was)
    close_runtime(rt)


@pytest.fixture
def platform(tmp_path: Path, runtime: VcRuntime) -> Iterator[Platform]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    migrate(engine)
    sessions: sessionmaker[Session] = make_session_factory(engine)
    for platform in make_platform(sessions, runtime):
        # Tasks get job tokens, as under `virtuai up`: the step agents prove themselves with it.
        platform.lifecycle = LifecycleLoop(
            sessions,
            platform.drivers,
            SystemClock(),
            LifecycleConfig(
                workspaces_dir=platform.state_dir / "workspaces",
                kill_grace_s=1,
                job_token_key=b"k" * 32,
            ),
            vnodes=runtime,
        )
        yield platform
    engine.dispose()


def test_srun_runs_ranks_on_every_node_of_the_cluster(platform: Platform) -> None:
    platform.tenant("physics", cpu=4, memory="2Gi")
    alice = platform.user("alice", "physics")
    assert create(platform, alice, "lab", 2, resources={"cpu": 2, "memory": "512Mi"}).status_code
    wait_vc(platform, "lab", {"running"}, timeout=60)
    res = resolve(SCRIPT, [], Context("two.sh", "/home/alice", "alice", {}))
    body, _notes = job_body(
        res,
        SCRIPT,
        env={},
        submit_dir="/home/alice",
        submit_host="login",
        user="alice",
        local=False,
        vc="lab",
    )
    job = platform.ok("POST", "/api/v1/jobs", alice, json=body)
    done = platform.wait_for([job["id"]], timeout=60)[job["id"]]
    assert done["state"] == "succeeded", (done, platform.logs(job["id"], 1, "stderr"))
    assert sorted(p["node"] for p in done["placement"]) == ["lab-0", "lab-1"]
    code, text, _err = run(platform, "lab", ["cat", f"/shared/slurm-{job['id']}.out"], alice)
    assert code == 0
    assert text.splitlines() == [
        "nodelist=lab-[0-1] nnodes=2 on lab-0",
        "0: lab-0 node 0 rank 0 of 4",
        "1: lab-0 node 0 rank 1 of 4",
        "2: lab-1 node 1 rank 2 of 4",
        "3: lab-1 node 1 rank 3 of 4",
        "srun: error: lab-1: task 0: Exited with exit code 3",
        "second node's step: 3",
    ]
