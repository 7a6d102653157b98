"""Jobs end to end through the API, the loops and the local driver: real processes."""

from __future__ import annotations

import time

import psutil
import pytest

from support.platform import Platform

PY = "python3"


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=2, memory="2Gi", gpu=2)
    return platform.user("alice", "physics")


def test_a_job_runs_and_its_output_and_exit_code_are_recorded(
    platform: Platform, alice: str
) -> None:
    ok = platform.submit(
        alice, [PY, "-c", "print('hello'); import sys; print('oops', file=sys.stderr)"]
    )
    bad = platform.submit(alice, ["sh", "-c", "echo failing; exit 3"], name="bad")
    assert ok["state"] == "pending" and ok["name"] == "python3"
    jobs = platform.wait_for([ok["id"], bad["id"]])

    assert jobs[ok["id"]]["state"] == "succeeded" and jobs[ok["id"]]["exit_code"] == 0
    assert platform.logs(ok["id"]) == "hello\n"
    assert platform.logs(ok["id"], stream="stderr") == "oops\n"
    assert jobs[bad["id"]]["state"] == "failed"
    assert jobs[bad["id"]]["exit_code"] == 3
    assert jobs[bad["id"]]["reason"] == "exited with code 3"
    states = [e["to_state"] for e in jobs[ok["id"]]["events"]]
    assert states == ["pending", "admitted", "starting", "running", "succeeded"]
    assert all(e["reason"] for e in jobs[ok["id"]]["events"])
    assert jobs[ok["id"]]["started_at"] <= jobs[ok["id"]]["finished_at"]


def test_gang_tasks_get_their_rank_and_rendezvous(platform: Platform, alice: str) -> None:
    script = (
        "import os; print(' '.join(os.environ[k] for k in "
        "['RANK','WORLD_SIZE','LOCAL_RANK','MASTER_ADDR','MASTER_PORT','VIRTUAI_JOB_ID',"
        "'CUDA_VISIBLE_DEVICES']))"
    )
    job = platform.submit(
        alice, [PY, "-c", script], tasks=2, resources={"cpu": 0.5, "memory": "64Mi", "gpu": 1}
    )
    done = platform.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "succeeded", done
    lines = [platform.logs(job["id"], task=i).split() for i in range(2)]
    assert [line[:3] for line in lines] == [["0", "2", "0"], ["1", "2", "1"]]
    assert lines[0][3:6] == lines[1][3:6]  # same MASTER_ADDR, MASTER_PORT, job id
    assert lines[0][5] == str(job["id"])
    assert sorted([lines[0][6], lines[1][6]]) == ["0", "1"]  # one distinct GPU each
    assert sorted(p["gpu_indices"][0] for p in done["placement"]) == [0, 1]


def test_a_failing_gang_task_stops_its_siblings(platform: Platform, alice: str) -> None:
    script = "import os, sys, time; sys.exit(5) if os.environ['RANK'] == '1' else time.sleep(60)"
    job = platform.submit(alice, [PY, "-c", script], tasks=2)
    done = platform.wait_for([job["id"]], timeout=20)[job["id"]]
    assert done["state"] == "failed"
    assert done["exit_code"] == 5
    assert done["reason"] == "task 1 exited with code 5"


@pytest.mark.root
def test_walltime_memory_and_cancel_end_in_their_own_states(platform: Platform, alice: str) -> None:
    trap = "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"
    slow = platform.submit(alice, ["sh", "-c", trap], time="2s")
    hog = platform.submit(
        alice,
        [PY, "-c", "x = bytearray(400 * 2**20)"],
        resources={"cpu": 0.5, "memory": "64Mi"},
    )
    victim = platform.submit(alice, ["sleep", "60"])
    platform.wait_for([victim["id"]], states={"running"})
    platform.ok("POST", f"/api/v1/jobs/{victim['id']}/cancel", alice)
    jobs = platform.wait_for([slow["id"], hog["id"], victim["id"]], timeout=30)

    assert jobs[slow["id"]]["state"] == "timed_out"
    assert jobs[slow["id"]]["reason"] == "reached its time limit"
    assert platform.logs(slow["id"]) == "got TERM\n"  # SIGTERM came before any SIGKILL
    assert jobs[hog["id"]]["state"] == "failed"
    assert jobs[hog["id"]]["reason"] == "out of memory"
    assert jobs[victim["id"]]["state"] == "cancelled"
    assert jobs[victim["id"]]["reason"] == "cancelled by request"


@pytest.mark.root
def test_jobs_run_as_an_unprivileged_user_per_tenant(platform: Platform, alice: str) -> None:
    job = platform.submit(alice, ["id", "-u"])
    assert platform.wait_for([job["id"]])[job["id"]]["state"] == "succeeded"
    assert int(platform.logs(job["id"])) != 0


def test_cancelling_a_pending_job_ends_it_at_once(platform: Platform, alice: str) -> None:
    job = platform.submit(alice, ["true"])
    cancelled = platform.ok("POST", f"/api/v1/jobs/{job['id']}/cancel", alice)
    assert cancelled["state"] == "cancelled"
    again = platform.call("POST", f"/api/v1/jobs/{job['id']}/cancel", alice)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    platform.tick()
    assert platform.job(job["id"])["state"] == "cancelled"


def test_the_quota_is_never_exceeded_and_waiting_jobs_say_why(
    platform: Platform, alice: str
) -> None:
    ids = [
        platform.submit(alice, ["sleep", "1"], resources={"cpu": 1, "memory": "64Mi"})["id"]
        for _ in range(3)
    ]
    platform.tick()
    jobs = [platform.job(i) for i in ids]
    assert [j["state"] for j in jobs].count("pending") == 1
    waiting = next(j for j in jobs if j["state"] == "pending")
    assert waiting["reason"] == "waiting for quota: tenant physics uses 2 of 2 cpu"
    assert waiting["queue_position"] == 1
    usage = platform.ok("GET", "/api/v1/tenants/physics", alice)["usage"]
    assert usage["cpu"] == 2
    platform.wait_for(ids)


def test_usage_records_what_ran(platform: Platform, alice: str) -> None:
    job = platform.submit(
        alice, ["sleep", "0.5"], tasks=2, resources={"cpu": 0.5, "memory": "1Gi", "gpu": 1}
    )
    done = platform.wait_for([job["id"]])[job["id"]]
    report = platform.ok("GET", "/api/v1/usage", alice)
    [row] = report["rows"]
    assert (row["tenant"], row["user"], row["jobs"], row["tasks"]) == ("physics", "alice", 1, 2)
    assert 1.0 <= row["wall_s"] < 10
    assert row["cpu_s"] == pytest.approx(0.5 * row["wall_s"])
    assert row["gpu_s"] == pytest.approx(row["wall_s"])
    assert row["memory_gb_s"] == pytest.approx(row["wall_s"])
    assert report["totals"][0]["tasks"] == 2
    future = platform.ok("GET", "/api/v1/usage", alice, params={"since": "2999-01-01"})
    assert future["rows"] == []
    assert done["state"] == "succeeded"


def test_a_restarted_control_plane_takes_running_jobs_back(platform: Platform, alice: str) -> None:
    marker = "echo run >> runs.txt; sleep 1.5; exit 7"
    job = platform.submit(alice, ["sh", "-c", marker])
    platform.wait_for([job["id"]], states={"running"})
    # The old control plane is gone (its objects are simply dropped, as by kill -9).
    successor = platform.restarted()
    done = successor.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "failed" and done["exit_code"] == 7
    workspace = platform.state_dir / "workspaces" / "physics" / "runs.txt"
    assert workspace.read_text() == "run\n"  # ran exactly once
    assert len([t for t in done["task_runs"]]) == 1


@pytest.mark.root
def test_tenants_cannot_see_each_others_processes(platform: Platform, alice: str) -> None:
    """`ps` in a task lists only its own tenant's processes (hidepid on a private /proc)."""
    platform.tenant("biology")
    bob = platform.user("bob", "biology")
    secret = "sleep 31.4159"
    hidden = platform.submit(alice, ["sh", "-c", f"echo started; exec {secret}"])
    # "running" is the supervisor's word, said before the workload runs as the tenant's
    # user: wait for the workload itself, or the two `ps` below could miss it either way.
    deadline = time.monotonic() + 30
    while "started" not in platform.logs(hidden["id"]) and time.monotonic() < deadline:
        platform.tick()
        time.sleep(0.05)
    spy = platform.submit(bob, ["ps", "-eo", "user:32,args"])
    mine = platform.submit(alice, ["ps", "-eo", "user:32,args"])
    jobs = platform.wait_for([spy["id"], mine["id"]])
    assert {j["state"] for j in jobs.values()} == {"succeeded"}
    seen_by_bob = platform.logs(spy["id"])
    assert "ps -eo" in seen_by_bob  # it sees itself...
    assert secret not in seen_by_bob  # ...but not Alice's job
    assert "virtuai" not in seen_by_bob and "root" not in seen_by_bob  # nor the server's
    assert secret in platform.logs(mine["id"])  # Alice's own tasks see each other
    # The host's /proc is untouched: the test process (root) still sees everything.
    assert any(
        secret in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )
    platform.ok("POST", f"/api/v1/jobs/{hidden['id']}/cancel", alice)
    platform.wait_for([hidden["id"]])
