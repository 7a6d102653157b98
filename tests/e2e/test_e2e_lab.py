"""The foundation as a new user checks it: a real `virtuai up`, the real CLI, real jobs.

Two tenants with quotas, 20 jobs (a gang, a failure, a walltime, an OOM), the
quota never exceeded while they run, the server killed with SIGKILL halfway
and started again: every job ends in its true state, none runs twice, the
tenants cannot see each other, and the accounting matches what ran.
"""

from __future__ import annotations

import collections
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, tenant users)")

QUOTAS = {"physics": {"cpu": 2.0, "memory": 2 * 2**30}, "biology": {"cpu": 1.5, "memory": 2**30}}
RECORD = 'echo "$VIRTUAI_JOB_ID" >> runs.log'
# Jobs hold their resources until the test opens the gate, so that the quota can be
# watched and the server killed while they run, whatever the speed of the machine.
GATE = "while [ ! -e {gate} ]; do sleep 0.1; done"


@pytest.fixture
def gate() -> Iterator[Path]:
    directory = public_dir("vai-e2e-gate-")
    yield directory / "open"
    remove_state(directory, [])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    workspaces = public_dir("vai-e2e-ws-")
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
    yield server
    if server.process and server.process.poll() is None:
        server.kill()
    remove_state(workspaces, QUOTAS)


def submit(server: Server, token: str, *args: str) -> int:
    return int(server.cli("submit", *args, token=token).strip())


def test_a_lab_shares_the_machine(server: Server, gate: Path) -> None:
    wait = GATE.format(gate=gate)
    # The first start configured the CLI for the administrator (mode 0600).
    config = Path(server.env["XDG_CONFIG_HOME"]) / "virtuai" / "cli.yaml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert server.json("whoami")["is_admin"] is True

    server.cli("tenant", "create", "physics", "--cpu", "2", "--memory", "2Gi", "--gpu", "1")
    server.cli("tenant", "create", "biology", "--cpu", "1.5", "--memory", "1Gi")
    alice = server.cli("user", "create", "alice", "--tenant", "physics").strip()
    bob = server.cli("user", "create", "bob", "--tenant", "biology").strip()
    assert server.json("whoami", token=alice)["tenants"] == [
        {"tenant": "physics", "role": "member"}
    ]

    small = ("--cpu", "0.5", "--memory", "128Mi", "--time", "1m")
    physics = [
        submit(server, alice, *small, "--", "sh", "-c", f"{RECORD}; {wait}") for _ in range(6)
    ]
    gang = submit(
        server,
        alice,
        *small,
        "--tasks",
        "2",
        "--",
        "sh",
        "-c",
        f'{RECORD}; test "$WORLD_SIZE" = 2; {wait}',
    )
    failing = submit(server, alice, *small, "--", "sh", "-c", f"{RECORD}; exit 4")
    too_long = submit(
        server,
        alice,
        "--cpu",
        "0.5",
        "--memory",
        "128Mi",
        "--time",
        "3s",
        "--",
        "sh",
        "-c",
        f"{RECORD}; sleep 60",
    )
    hog = submit(
        server,
        alice,
        "--cpu",
        "0.5",
        "--memory",
        "64Mi",
        "--",
        "python3",
        "-c",
        "open('runs.log', 'a').write(__import__('os').environ['VIRTUAI_JOB_ID'] + '\\n');"
        " x = bytearray(400 * 2**20)",
    )
    biology = [
        submit(server, bob, *small, "--", "sh", "-c", f"{RECORD}; sleep 1; {wait}")
        for _ in range(10)
    ]
    all_jobs = [*physics, gang, failing, too_long, hog, *biology]
    assert len(all_jobs) == 20

    # The quota holds at every moment we look, and waiting jobs say why.
    saw_running = saw_quota_reason = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (saw_running and saw_quota_reason):
        for tenant in server.json("tenant", "list"):
            quota = QUOTAS[tenant["name"]]
            assert tenant["usage"]["cpu"] <= quota["cpu"], tenant
            assert tenant["usage"]["memory"] <= quota["memory"], tenant
        jobs = server.json("jobs")
        saw_running = saw_running or sum(j["state"] == "running" for j in jobs) >= 3
        saw_quota_reason = saw_quota_reason or any(
            j["state"] == "pending" and j["reason"].startswith("waiting for quota: tenant")
            for j in jobs
        )
        time.sleep(0.2)
    assert saw_running and saw_quota_reason

    # kill -9 while jobs run; the next `virtuai up` takes them back.
    running_before = {j["id"] for j in server.json("jobs", "--state", "running")}
    server.kill()
    gate.touch()  # jobs go on without the server, and some end while it is down
    time.sleep(1)
    server.start()
    assert running_before

    for job_id in all_jobs:
        server.run("wait", str(job_id), "--timeout", "60")
    final = {j["id"]: j for j in server.json("jobs")}
    expected_state = collections.defaultdict(lambda: "succeeded")
    expected_state.update({failing: "failed", too_long: "timed_out", hog: "failed"})
    for job_id in all_jobs:
        if final[job_id]["state"] != expected_state[job_id]:
            # Say why: the job's reason, its events and its tasks' outcomes.
            detail = server.json("job", str(job_id))
            raise AssertionError(
                (expected_state[job_id], detail.get("events"), detail.get("task_runs"))
            )
    assert final[failing]["exit_code"] == 4
    assert final[hog]["reason"] == "out of memory"
    assert final[too_long]["reason"] == "reached its time limit"
    assert final[gang]["exit_code"] == 0

    # Every job ran exactly once (the gang once per task), across the restart.
    runs: collections.Counter[int] = collections.Counter()
    for tenant in QUOTAS:
        log = Path(server.env["VIRTUAI_WORKSPACES"]) / tenant / "runs.log"
        runs.update(int(line) for line in log.read_text().split())
    assert runs == {job_id: 2 if job_id == gang else 1 for job_id in all_jobs}

    # Tenants see only their own work.
    assert {j["id"] for j in server.json("jobs", token=bob)} == set(biology)
    foreign = server.run("job", str(physics[0]), token=bob)
    assert foreign.returncode == 1
    assert foreign.stderr.strip() == f"error: job {physics[0]} not found (field: id)"

    # The accounting matches what ran.
    usage = server.json("usage")
    rows = {row["tenant"]: row for row in usage["totals"]}
    assert (rows["physics"]["jobs"], rows["physics"]["tasks"]) == (10, 11)
    assert (rows["biology"]["jobs"], rows["biology"]["tasks"]) == (10, 10)
    assert rows["biology"]["cpu_s"] == pytest.approx(0.5 * rows["biology"]["wall_s"])
    assert 10 * 1 <= rows["biology"]["wall_s"] < 10 * 30
    assert json.loads(server.cli("usage", "--json", "--tenant", "biology", token=bob))["rows"] == [
        r for r in usage["rows"] if r["tenant"] == "biology"
    ]

    # Before switching the live scheduler, the operator replays the lab's own jobs, on its
    # own nodes and quotas, under other policies.
    exported = Path(server.env["XDG_CONFIG_HOME"]).parent / "replay"
    said = server.cli("sim", "export", "--since", "1h", "--out", str(exported))
    assert f"{exported / 'trace.csv'}: 20 jobs submitted since" in said
    assert f"{exported / 'cluster.yaml'}: 1 node in 1 pool, 0 GPUs, 2 tenants" in said
    replay = server.json(
        "sim", "--trace", str(exported / "trace.csv"), "--cluster",
        str(exported / "cluster.yaml"), "--policy", "fifo", "--policy", "las-fairshare",
        "--no-plots",
    )  # fmt: skip
    assert replay["trace"]["tenants"] == ["biology", "physics"]
    for policy in replay["policies"]:
        metrics = policy["metrics"]
        # The job that ran past its limit times out in the replay too.
        assert (metrics["finished"], metrics["timed_out"]) == (20, 1), policy["name"]
