"""What Slurm and the network do to jobs on a site: limits, preemption, daemons and SSH lost."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid

import pytest
from sqlalchemy import select

from conftest import SlurmDev
from support.platform import Platform
from virtuai.store.models import JobEventRow, TaskRow

pytestmark = pytest.mark.root


def ns_pids(namespace: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def kill_all(pids: list[int]) -> None:
    """Kill them as a node dies: all at once.  Each is stopped first, so that none sees
    another die and reports it (a slurmstepd that outlived its task told slurmctld the
    job FAILED, exit 105, before the node was found dead)."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def ended(p: Platform, job_id: int, timeout: float) -> dict[str, object]:
    """The job once finished, and once the site loop has put Slurm's words in its reason."""
    p.wait_for([job_id], timeout=timeout)
    p.tick()
    return p.job(job_id)


def slurm_id(p: Platform, job_id: int) -> str:
    with p.sessions() as session:
        handle = session.scalars(
            select(TaskRow.handle).where(TaskRow.job_id == job_id, TaskRow.index == 0)
        ).first()
    assert handle is not None
    return str(handle["slurm_id"])


def test_walltime_and_out_of_memory_end_jobs_in_slurms_words(site_platform: Platform) -> None:
    p = site_platform
    # Slurm counts time limits in minutes and checks them every 30 s: the two jobs share the wait.
    walltime = p.submit(p.admin_token, ["sleep", "600"], tenant="physics", site="vsd", time="1m")
    oom = p.submit(
        p.admin_token,
        ["python3", "-c", "x = bytearray(600 * 2**20); import time; time.sleep(30)"],
        tenant="physics",
        site="vsd",
        resources={"cpu": 1, "memory": "100Mi"},
        time="1m",
    )
    first = ended(p, oom["id"], 60)
    assert first["state"] == "failed"
    assert first["reason"].startswith("out of memory") and "OUT_OF_MEMORY" in first["reason"]
    timed = ended(p, walltime["id"], 150)
    assert timed["state"] == "timed_out"
    assert "reached its time limit" in timed["reason"] and "TIMEOUT" in timed["reason"]


def test_preemption_sends_the_checkpoint_signal_then_scancel_then_requeues(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    mark = f"ckpt-{uuid.uuid4().hex[:8]}"
    script = (
        'if [ "$VIRTUAI_RESTART_COUNT" -ge 1 ]; then echo resumed; exit 0; fi; '
        f"trap 'echo checkpointed rank $RANK >> $HOME/{mark}' USR1; "
        f"echo $RANK >> $HOME/{mark}.started; "
        "while true; do sleep 1; done"
    )
    victim = p.submit(
        p.admin_token,
        ["bash", "-c", script],
        tenant="physics",
        site="vsd",
        tasks=2,
        resources={"cpu": 4, "memory": "256Mi"},
        priority="low",
        signal="USR1@3",
        time="5m",
    )
    p.wait_for([victim["id"]], states={"running"}, timeout=30)
    for _ in range(60):  # running in Slurm, not only handed to it
        p.tick()
        if "RUNNING" in p.job(victim["id"])["reason"]:
            break
        time.sleep(0.2)
    # Preempted only once both tasks trap USR1: Slurm's RUNNING is the batch script's, whose
    # `srun` may not have started the tasks yet (a signal then finds no handler to run).
    _wait_for_lines(slurm, f"~/{mark}.started", 2)
    urgent = p.submit(
        p.admin_token,
        ["true"],
        tenant="physics",
        site="vsd",
        resources={"cpu": 4, "memory": "256Mi"},
        priority="high",
        time="1m",
    )
    done = p.wait_for([urgent["id"], victim["id"]], timeout=90)
    assert done[urgent["id"]]["state"] == "succeeded"
    assert done[victim["id"]]["state"] == "succeeded"
    assert done[victim["id"]]["restart_count"] == 1
    assert p.logs(victim["id"]).strip() == "resumed"
    # Both tasks got USR1 before Slurm cancelled them.
    assert sorted(slurm.ssh(f"cat ~/{mark}").split("\n")[:2]) == [
        "checkpointed rank 0",
        "checkpointed rank 1",
    ]
    with p.sessions() as session:
        moves = [
            (e.from_state, e.to_state)
            for e in session.scalars(select(JobEventRow).where(JobEventRow.job_id == victim["id"]))
        ]
    assert ("running", "preempting") in moves and ("preempting", "pending") in moves
    slurm.ssh(f"rm -f ~/{mark} ~/{mark}.started")


def _wait_for_lines(slurm: SlurmDev, path: str, lines: int, timeout: float = 30) -> None:
    """Until the file at ``path`` on the login node has ``lines`` lines (tasks' marks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(slurm.ssh(f"cat {path} 2>/dev/null || true").split()) >= lines:
            return
        time.sleep(0.25)
    raise AssertionError(f"{path}: not {lines} lines within {timeout:.0f} s: tasks not started")


def test_an_unreachable_login_node_keeps_jobs_in_their_last_state(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    job = p.submit(p.admin_token, ["sleep", "8"], tenant="physics", site="vsd", time="2m")
    p.wait_for([job["id"]], states={"running"}, timeout=30)
    kill_all(ns_pids("vsd-login"))  # the login node is gone: sshd and every session
    for _ in range(3):
        p.tick()
    seen = p.job(job["id"])
    assert seen["state"] == "running"
    assert seen["reason"].startswith("site vsd unreachable since "), seen
    site = p.ok("GET", "/api/v1/sites/vsd")
    assert site["health"] == "unreachable" and site["unreachable_since"] is not None
    # Submitted while the site is down: it waits to be launched, it does not fail.
    later = p.submit(p.admin_token, ["true"], tenant="physics", site="vsd", time="1m")
    for _ in range(3):
        p.tick()
    assert p.job(later["id"])["state"] in {"admitted", "starting"}
    slurm.script("start")  # the login node is back
    done = p.wait_for([job["id"], later["id"]], timeout=90)
    assert {j["state"] for j in done.values()} == {"succeeded"}
    assert p.ok("GET", "/api/v1/sites/vsd")["health"] != "unreachable"


def test_a_slurmctld_restart_is_survived(site_platform: Platform, slurm: SlurmDev) -> None:
    p = site_platform
    # The job ends when the test says so, once slurmctld is back: one that ends while
    # slurmctld is down is one real Slurm may itself fail ("missing from batch node", exit
    # code 1) when the outage outlasts slurmstepd's retries, as it can on a loaded machine.
    # The outage starts once the task itself runs: "running" is Slurm's word for the batch
    # script, whose `srun` still needs slurmctld to create the task's step, and fails with
    # exit code 1 if slurmctld is down then (as it does under real Slurm: not this test's
    # subject).
    mark = f"resume-{uuid.uuid4().hex[:8]}"
    script = (
        f"echo started > $HOME/{mark}.started; "
        f"for i in $(seq 600); do [ -e $HOME/{mark} ] && exit 0; sleep 0.2; done; exit 3"
    )
    job = p.submit(p.admin_token, ["bash", "-c", script], tenant="physics", site="vsd", time="3m")
    p.wait_for([job["id"]], states={"running"}, timeout=30)
    _wait_for_lines(slurm, f"~/{mark}.started", 1)
    os.kill(slurm.pid("slurmctld"), signal.SIGTERM)
    for _ in range(50):
        if not (slurm.dir / "run" / "slurmctld.pid").exists():
            break
        try:
            os.kill(slurm.pid("slurmctld"), 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    for _ in range(3):
        p.tick()
    assert p.job(job["id"])["state"] == "running"
    assert p.ok("GET", "/api/v1/sites/vsd")["health"] == "unreachable"
    slurm.script("start")
    for _ in range(60):  # the site loop sees the job in Slurm again
        p.tick()
        if p.ok("GET", "/api/v1/sites/vsd")["health"] != "unreachable":
            break
        time.sleep(0.5)
    assert p.job(job["id"])["state"] == "running"
    slurm.ssh(f"touch ~/{mark}")
    try:
        done = p.wait_for([job["id"]], timeout=90)[job["id"]]
        assert done["state"] == "succeeded", (done["reason"], done.get("task_runs"))
    finally:
        slurm.ssh(f"rm -f ~/{mark} ~/{mark}.started")


def test_a_killed_node_fails_the_job_with_node_fail(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    job = p.submit(p.admin_token, ["sleep", "300"], tenant="physics", site="vsd", time="5m")
    p.wait_for([job["id"]], states={"running"}, timeout=30)
    node = ""
    for _ in range(60):
        node = slurm.ssh(f"squeue -h -j {slurm_id(p, job['id'])} -o %N").strip()
        if node:
            break
        time.sleep(0.2)
    assert node in {"vsd-n1", "vsd-n2"}
    kill_all(ns_pids(node))  # slurmd, slurmstepd and the job: the node is dead
    try:
        done = ended(p, job["id"], 120)
        assert done["state"] == "failed"
        assert "NODE_FAIL" in done["reason"], done
    finally:
        slurm.script("start")  # slurmd back, node resumed
