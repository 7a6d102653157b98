"""Preemption for real: a borrower's job gets its checkpoint signal, is requeued and resumes."""

from __future__ import annotations

import time

import pytest

from support.platform import Platform
from virtuai.store.models import JobRow

# Writes a checkpoint when told to (USR1), and resumes from it when started again.
CHECKPOINTING = """
f=ckpt-$VIRTUAI_JOB_ID
if [ -e "$f" ]; then
  echo "resumed from $(cat "$f") after $VIRTUAI_RESTART_COUNT restart(s)"; exit 0
fi
trap 'echo step-42 > "$f"; echo checkpointed; exit 0' USR1
echo started; while :; do sleep 0.1; done
"""


@pytest.fixture
def tokens(platform: Platform) -> dict[str, str]:
    for name in ("physics", "biology"):
        platform.ok(
            "POST", "/api/v1/tenants", json={"name": name, "quota": {"cpu": 1}, "cohort": "lab"}
        )
    return {
        "physics": platform.user("alice", "physics"),
        "biology": platform.user("bob", "biology"),
    }


def test_a_lender_reclaims_its_quota_from_a_borrower(
    platform: Platform, tokens: dict[str, str]
) -> None:
    one_cpu = {"cpu": 1, "memory": "64Mi"}
    holder = platform.submit(tokens["physics"], ["sleep", "3"], resources=one_cpu)
    borrower = platform.submit(
        tokens["physics"], ["sh", "-c", CHECKPOINTING], resources=one_cpu, signal="USR1@10"
    )
    platform.wait_for([holder["id"], borrower["id"]], states={"running"})
    # Launching does not wait for the process: wait until it runs, so it can checkpoint.
    deadline = time.monotonic() + 20
    while "started" not in platform.logs(borrower["id"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    physics = platform.ok("GET", "/api/v1/tenants/physics", tokens["physics"])["quotas"][0]
    assert (physics["used"]["cpu"], physics["borrowed"]["cpu"]) == (2, 1)
    biology = platform.ok("GET", "/api/v1/tenants/biology", tokens["biology"])["quotas"][0]
    assert biology["lent"]["cpu"] == 1

    # The lender wants its nominal quota back: the youngest borrowing job makes room.
    lender = platform.submit(tokens["biology"], ["sleep", "0.5"], resources=one_cpu)
    platform.wait_for([lender["id"]], states={"running", "succeeded"}, timeout=20)
    requeued = platform.job(borrower["id"])
    assert requeued["restart_count"] == 1
    states = [e["to_state"] for e in requeued["events"]]
    assert states[:6] == ["pending", "admitted", "starting", "running", "preempting", "pending"]
    preempting = next(e for e in requeued["events"] if e["to_state"] == "preempting")
    assert "biology" in preempting["reason"]
    assert platform.job(holder["id"])["restart_count"] == 0
    # It remembers its preemptor for good: the scheduler never lets it preempt that one back.
    with platform.sessions() as session:
        assert session.get_one(JobRow, borrower["id"]).preempted_by == [lender["id"]]

    # It resumes from its checkpoint once there is room again, with the same id.
    done = platform.wait_for([borrower["id"], holder["id"], lender["id"]], timeout=30)
    assert {j["state"] for j in done.values()} == {"succeeded"}
    assert platform.logs(borrower["id"]) == "resumed from step-42 after 1 restart(s)\n"
    runs = done[borrower["id"]]["task_runs"]
    assert [(r["attempt"], r["outcome"]) for r in runs] == [(0, "preempted"), (1, "exited")]


def test_a_job_that_cannot_be_preempted_may_not_borrow_and_is_refused_above_its_quota(
    platform: Platform, tokens: dict[str, str]
) -> None:
    two_cpu = {"cpu": 2, "memory": "64Mi"}
    # A job of class high cannot be preempted, so it could never give back what it
    # borrowed: above its tenant's nominal quota it could never run.
    refused = platform.call(
        "POST",
        "/api/v1/jobs",
        tokens["physics"],
        json={"command": ["true"], "resources": two_cpu, "priority": "high"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json() == {
        "code": "unschedulable",
        "message": "can never run: needs 2 cpu in total but tenant physics has a quota of 1 cpu; "
        "a job that cannot be preempted does not borrow",
        "field": "resources",
    }
    # The same job of class normal borrows from the cohort, and runs.
    job = platform.submit(tokens["physics"], ["true"], resources=two_cpu)
    assert platform.wait_for([job["id"]], timeout=20)[job["id"]]["state"] == "succeeded"


def test_without_requeue_a_preempted_job_ends_as_preempted(
    platform: Platform, tokens: dict[str, str]
) -> None:
    one_cpu = {"cpu": 1, "memory": "64Mi"}
    platform.submit(tokens["physics"], ["sleep", "2"], resources=one_cpu)
    borrower = platform.submit(tokens["physics"], ["sleep", "60"], resources=one_cpu, requeue=False)
    platform.wait_for([borrower["id"]], states={"running"})
    platform.submit(tokens["biology"], ["true"], resources=one_cpu)
    done = platform.wait_for([borrower["id"]], timeout=20)[borrower["id"]]
    assert done["state"] == "preempted"
    assert done["reason"].endswith("(not requeued)")
