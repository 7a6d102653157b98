"""`plan` and `fairshare` answer with the scheduler's own code, on a live platform."""

from __future__ import annotations

import pytest

from support.platform import Platform


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=2, memory="2Gi", gpu=1)
    return platform.user("alice", "physics")


def test_plan_says_where_and_when_without_submitting(platform: Platform, alice: str) -> None:
    body = {"command": ["true"], "resources": {"cpu": 1, "memory": "64Mi", "gpu": 1}}
    now = platform.ok("POST", "/api/v1/jobs/plan", alice, json=body)
    assert (now["can_ever_run"], now["starts_now"]) == (True, True)
    assert now["placement"] == [{"index": 0, "node": "node-1", "gpu_indices": [0]}]
    assert platform.ok("GET", "/api/v1/jobs", alice) == []  # nothing was submitted

    never = platform.ok("POST", "/api/v1/jobs/plan", alice, json={**body, "resources": {"cpu": 3}})
    assert (never["can_ever_run"], never["kind"]) == (False, "never")
    assert "quota of 2 cpu" in never["reason"]

    holder = platform.submit(alice, ["sleep", "30"], resources={"cpu": 2, "memory": "64Mi"})
    platform.wait_for([holder["id"]], states={"running"})
    later = platform.ok("POST", "/api/v1/jobs/plan", alice, json=body)
    assert (later["can_ever_run"], later["starts_now"], later["kind"]) == (True, False, "quota")
    assert later["reason"] == "waiting for quota: tenant physics uses 2 of 2 cpu"
    platform.ok("POST", f"/api/v1/jobs/{holder['id']}/cancel", alice)
    platform.wait_for([holder["id"]])


def test_fairshare_lists_weights_usage_and_factors(platform: Platform, alice: str) -> None:
    platform.ok("POST", "/api/v1/tenants", json={"name": "biology", "weight": 3})
    job = platform.submit(alice, ["sleep", "0.5"], resources={"cpu": 1, "memory": "64Mi"})
    platform.wait_for([job["id"]])
    rows = {r["tenant"]: r for r in platform.ok("GET", "/api/v1/fairshare")}
    assert rows["physics"]["norm_shares"] == pytest.approx(0.25)
    assert rows["biology"]["norm_shares"] == pytest.approx(0.75)
    assert rows["physics"]["decayed_usage"]["cpu_hours"] > 0
    assert rows["biology"]["decayed_usage"]["cpu_hours"] == 0
    assert rows["physics"]["factor"] < rows["biology"]["factor"] == 1.0
    # Users see their own tenants only.
    assert [r["tenant"] for r in platform.ok("GET", "/api/v1/fairshare", alice)] == ["physics"]


def test_any_user_reads_the_priority_classes_a_job_may_name(platform: Platform, alice: str) -> None:
    classes = platform.ok("GET", "/api/v1/priority-classes", alice)
    assert classes == [
        {"name": "high", "value": 1000, "preemptible": False},
        {"name": "normal", "value": 500, "preemptible": True},
        {"name": "low", "value": 100, "preemptible": True},
    ]
    assert platform.call("GET", "/api/v1/priority-classes", "vai_not_a_token").status_code == 401
