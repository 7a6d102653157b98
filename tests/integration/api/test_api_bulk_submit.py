"""Many jobs in one request: one transaction, all recorded or none, errors name the job."""

from __future__ import annotations

from support.platform import Platform

BULK = "/api/v1/jobs/bulk"


def test_a_sweep_is_one_request_and_every_job_is_recorded(platform: Platform) -> None:
    platform.tenant("physics", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    sweep = [
        {"command": ["echo", str(lr)], "resources": {"cpu": 0.1, "memory": "16Mi"}}
        for lr in range(5)
    ]
    jobs = platform.ok("POST", BULK, alice, json={"jobs": sweep})
    assert [j["command"] for j in jobs] == [["echo", str(lr)] for lr in range(5)]
    assert len({j["id"] for j in jobs}) == 5
    assert {j["state"] for j in jobs} == {"pending"} and {j["user"] for j in jobs} == {"alice"}
    done = platform.wait_for([j["id"] for j in jobs])
    assert {j["state"] for j in done.values()} == {"succeeded"}


def test_one_bad_job_refuses_the_whole_batch_and_says_which(platform: Platform) -> None:
    platform.tenant("physics", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    fine = {"command": ["true"], "resources": {"cpu": 0.1, "memory": "16Mi"}}
    too_big = {"command": ["true"], "resources": {"cpu": 64, "memory": "16Mi"}}
    refused = platform.call("POST", BULK, alice, json={"jobs": [fine, fine, too_big]})
    assert refused.status_code == 422
    assert refused.json()["field"].startswith("jobs.2")
    bad_unit = {"command": ["true"], "resources": {"cpu": "lots"}}
    refused = platform.call("POST", BULK, alice, json={"jobs": [fine, bad_unit]})
    assert refused.status_code == 422 and refused.json()["field"].startswith("jobs.1")
    assert platform.ok("GET", "/api/v1/jobs", alice) == []  # nothing of either batch
    empty = platform.call("POST", BULK, alice, json={"jobs": []})
    assert empty.status_code == 422 and empty.json()["field"] == "jobs"
