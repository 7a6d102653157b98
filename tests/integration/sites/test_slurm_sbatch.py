"""``virtuai sbatch`` scripts on a real Slurm site: the site's own sbatch gets the script's
sizes, so ``-N 2`` is two nodes and the script's ``srun`` is Slurm's, with memory for it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from conftest import SlurmDev
from support import mpi as mpi_program
from support.platform import Platform
from virtuai.cli.slurmjob import job_body
from virtuai.slurmfront.resolve import Context, resolve
from virtuai.store.models import JobEventRow, TaskRow

pytestmark = pytest.mark.root

TWO_NODES = """#!/bin/bash
#SBATCH -N 2 --ntasks-per-node=1 -c 1 --mem=300M -t 3
#SBATCH -J two_nodes -o out-%j.txt -e err-%x.txt
echo "nnodes=$SLURM_NNODES ntasks=$SLURM_NTASKS name=$SLURM_JOB_NAME restart=$SLURM_RESTART_COUNT"
echo "argument=$1 array=${SLURM_ARRAY_TASK_ID:-none}"
srun hostname | sort
srun --mem=100M -l bash -c 'echo "step with memory on $(hostname) rank $SLURM_PROCID"' | sort
echo done >&2
"""


def sbatch_body(script: str, *args: str) -> dict[str, Any]:
    """The job ``virtuai sbatch -A physics -p vsd:debug script`` sends."""
    res = resolve(
        script,
        ["-A", "physics", "-p", "vsd:debug"],
        Context("job.sh", "/home/ann", "ann", {}),
        list(args),
    )
    body, _notes = job_body(
        res, script, env={}, submit_dir="/home/ann", submit_host="login", user="ann", local=False
    )
    assert body["site"] == "vsd"
    return body


def without_step_waits(stderr: str) -> str:
    """The stderr without srun's notes that a step waited for the previous one's CPUs: Slurm
    frees a finished step's CPUs asynchronously, so the script's second ``srun`` sometimes
    waits a moment for them, and says so."""
    waits = ("step creation temporarily disabled", "Step created for job")
    return "".join(
        line
        for line in stderr.splitlines(keepends=True)
        if not (line.startswith("srun: ") and any(w in line for w in waits))
    )


def test_a_two_node_script_gets_two_slurm_nodes_and_its_sruns_run_natively(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    # One CPU per node: virtuai may place both of its tasks on one site node, Slurm may not.
    job = p.ok("POST", "/api/v1/jobs", json=sbatch_body(TWO_NODES, "alpha"))
    done = p.wait_for([job["id"]], timeout=90)[job["id"]]
    assert done["state"] == "succeeded", (done["reason"], p.logs(job["id"], stream="stderr"))
    with p.sessions() as session:
        handles = list(session.scalars(select(TaskRow.handle).where(TaskRow.job_id == job["id"])))
    slurm_id = handles[0]["slurm_id"]
    assert {h["slurm_id"] for h in handles} == {slurm_id} and len(handles) == 2
    # The script's output file (in the tenant's workspace on the site) is the job's log.
    out = p.logs(job["id"])
    lines = out.splitlines()
    assert lines[:4] == [
        "nnodes=2 ntasks=2 name=two_nodes restart=0",
        "argument=alpha array=none",
        "vsd-n1",
        "vsd-n2",
    ], out
    assert lines[4:] == [
        "0: step with memory on vsd-n1 rank 0",
        "1: step with memory on vsd-n2 rank 1",
    ], out
    assert without_step_waits(p.logs(job["id"], stream="stderr")) == "done\n"
    assert p.logs(job["id"], task=1) == ""
    workspace = slurm.ssh("cat virtuai/work/physics/out-" + slurm_id + ".txt")
    assert workspace == out
    # Slurm's own view: one allocation of two nodes, the sizes of the script, two steps.
    for _ in range(50):  # slurmdbd has the job's final record a moment after slurmctld
        acct = slurm.ssh(f"sacct -n -P -j {slurm_id} -o JobID,JobName,NNodes,ReqMem,State")
        rows = [line.split("|") for line in acct.splitlines()]
        if len(rows) == 4 and rows[0][1] != "allocation":
            break
        time.sleep(0.2)
    # (sacct 22.05 shows the memory of the whole job: 300M on each of 2 nodes)
    assert rows[0] == [slurm_id, "two_nodes", "2", "600M", "COMPLETED"], acct
    assert [(r[0], r[2]) for r in rows[1:]] == [
        (f"{slurm_id}.batch", "1"),
        (f"{slurm_id}.0", "2"),
        (f"{slurm_id}.1", "2"),
    ], acct
    # Usage once per task of the attempt (two nodes' shares), from Slurm's times.
    usage = p.ok("GET", "/api/v1/usage", params={"tenant": "physics"})
    row = next(r for r in usage["rows"] if r["tenant"] == "physics")
    assert row["jobs"] == 1 and row["tasks"] == 2


PREEMPTED = """#!/bin/bash
#SBATCH -N 1 -c 4 --mem=200M -t 5 --qos=low
#SBATCH --signal=B:USR1@2
#SBATCH -o ckpt-%j.out
if [ "$SLURM_RESTART_COUNT" -ge 1 ]; then echo "resumed"; exit 0; fi
trap 'echo "checkpoint $MARK"' USR1
echo "started $MARK"
srun sleep 300 &
wait
wait
"""


def test_a_preempted_script_gets_its_signal_once_in_the_batch_shell_then_requeues(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    mark = uuid.uuid4().hex[:8]
    body = sbatch_body(PREEMPTED)
    body["env"]["MARK"] = mark
    victim = p.ok("POST", "/api/v1/jobs", json=body)
    p.wait_for([victim["id"]], states={"running"}, timeout=30)
    for _ in range(100):  # running in Slurm, and its script has started
        p.tick()
        if f"started {mark}" in p.logs(victim["id"]):
            break
        time.sleep(0.2)
    urgent = p.submit(
        p.admin_token,
        ["true"],
        tenant="physics",
        site="vsd",
        tasks=2,
        resources={"cpu": 4, "memory": "256Mi"},
        priority="high",
        time="1m",
    )
    done = p.wait_for([urgent["id"], victim["id"]], timeout=90)
    assert done[urgent["id"]]["state"] == "succeeded"
    assert done[victim["id"]]["state"] == "succeeded", done[victim["id"]]["reason"]
    assert done[victim["id"]]["restart_count"] == 1
    assert p.logs(victim["id"]).strip() == "resumed"
    # The first attempt's output: the batch shell caught USR1 exactly once.
    with p.sessions() as session:
        first = session.scalars(
            select(TaskRow.handle).where(TaskRow.job_id == victim["id"], TaskRow.attempt == 0)
        ).first()
        moves = [
            (e.from_state, e.to_state)
            for e in session.scalars(select(JobEventRow).where(JobEventRow.job_id == victim["id"]))
        ]
    assert first is not None
    text = slurm.ssh(f"cat virtuai/work/physics/ckpt-{first['slurm_id']}.out")
    assert text.splitlines()[:2] == [f"started {mark}", f"checkpoint {mark}"], text
    assert text.count("checkpoint") == 1, text
    assert ("running", "preempting") in moves and ("preempting", "pending") in moves


def test_cancel_scancels_the_native_job(site_platform: Platform, slurm: SlurmDev) -> None:
    p = site_platform
    script = "#!/bin/bash\n#SBATCH -N 2 -t 5\nsrun sleep 300\n"
    job = p.ok("POST", "/api/v1/jobs", json=sbatch_body(script))
    p.wait_for([job["id"]], states={"running"}, timeout=30)
    for _ in range(100):
        p.tick()
        if "RUNNING" in p.job(job["id"])["reason"]:
            break
        time.sleep(0.2)
    p.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
    done = p.wait_for([job["id"]], timeout=60)[job["id"]]
    assert done["state"] == "cancelled"
    with p.sessions() as session:
        handle = session.scalars(select(TaskRow.handle).where(TaskRow.job_id == job["id"])).first()
    assert handle is not None
    assert "CANCELLED" in slurm.ssh(f"sacct -n -X -o State -j {handle['slurm_id']}")


MPI = """#!/bin/bash
#SBATCH -N 2 --ntasks-per-node=2 -c 1 --mem=300M -t 3
#SBATCH -o mpi-%j.out
srun --mpi=pmix {hello} | sort
"""


def test_an_mpi_script_gets_one_world_from_the_sites_own_srun_mpi_pmix(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    """The site's srun with Slurm's PMIx plugin (libpmix2) wires a real Open MPI program's
    four ranks on two nodes into one world (an allreduce over them)."""
    p = site_platform
    hello = mpi_program.build(slurm.dir / "mpi")  # the nodes share this file system
    job = p.ok("POST", "/api/v1/jobs", json=sbatch_body(MPI.format(hello=hello)))
    # Past the script's own limit (-t 3): a step that hangs ends in Slurm's words, with
    # the ranks' stderr shown below, rather than in this test's timeout.
    done = p.wait_for([job["id"]], timeout=240)[job["id"]]
    assert done["state"] == "succeeded", (done["reason"], p.logs(job["id"], stream="stderr"))
    assert p.logs(job["id"]).splitlines() == [
        f"rank {r} of 4 on node {r // 2} sum 10" for r in range(4)
    ], p.logs(job["id"], stream="stderr")
