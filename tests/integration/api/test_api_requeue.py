"""`POST /jobs/{id}/requeue` (Slurm's scontrol requeue): by a user, or by the job itself."""

from __future__ import annotations

import pytest

from support.platform import Platform
from virtuai.auth.jobtokens import job_token

KEY = b"k" * 32
# The first run stops when asked (SIGTERM) with status 0; the requeued run says so and ends.
ONCE = """
if [ "$VIRTUAI_RESTART_COUNT" -gt 0 ]; then echo "run $VIRTUAI_RESTART_COUNT"; exit 0; fi
trap 'exit 0' TERM
echo started; while :; do sleep 0.1; done
"""


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("requeuers", cpu=2)
    platform.context.job_token_key = KEY
    return platform.user("alice", "requeuers")


def test_a_user_requeues_a_running_job_whatever_its_exit(platform: Platform, alice: str) -> None:
    job = platform.submit(alice, ["sh", "-c", ONCE])
    platform.wait_for([job["id"]], states={"running"})
    answer = platform.ok("POST", f"/api/v1/jobs/{job['id']}/requeue", alice)
    assert answer["state"] == "preempting"
    done = platform.wait_for([job["id"]])[job["id"]]
    assert (done["state"], done["restart_count"]) == ("succeeded", 1)
    assert platform.logs(job["id"]) == "run 1\n"
    reasons = [e["reason"] for e in platform.job(job["id"])["events"]]
    assert "requeue requested (scontrol requeue)" in reasons


def test_the_job_token_acts_on_its_own_job_and_attempt_only(platform: Platform, alice: str) -> None:
    job = platform.submit(alice, ["sh", "-c", ONCE])
    other = platform.submit(alice, ["sleep", "30"], requeue=False)
    platform.wait_for([job["id"], other["id"]], states={"running"})
    path = f"/api/v1/jobs/{job['id']}/requeue"
    forged = platform.call("POST", path, "vaij_1_0_" + "0" * 64)
    assert forged.status_code == 401
    stale = platform.call("POST", path, job_token(KEY, job["id"], 5))
    assert stale.status_code == 404
    foreign = platform.call("POST", path, job_token(KEY, other["id"], 0))
    assert foreign.status_code == 404
    no_requeue = platform.call(
        "POST", f"/api/v1/jobs/{other['id']}/requeue", job_token(KEY, other["id"], 0)
    )
    assert no_requeue.status_code == 409
    assert "--no-requeue" in no_requeue.json()["message"]
    own = platform.call("POST", path, job_token(KEY, job["id"], 0))
    assert own.status_code == 200, own.text
    again = platform.call("POST", path, job_token(KEY, job["id"], 0))
    assert again.status_code == 409
    platform.wait_for([job["id"]], states={"succeeded"})
