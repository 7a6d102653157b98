"""Concurrent ``POST /api/v1/jobs`` share transactions (store/groupcommit.py): each is
answered as before, one refusal sinks no other, and every answered job is recorded."""

from __future__ import annotations

import threading
from typing import Any

from support.platform import Platform

HELD = {"command": ["true"], "resources": {"cpu": 0.1, "memory": "16Mi"}}


def test_concurrent_submits_are_all_recorded_and_a_refusal_is_its_own(
    platform: Platform,
) -> None:
    platform.tenant("physics", cpu=2, memory="2Gi")
    platform.tenant("chem", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "chem")
    blocker = platform.ok("POST", "/api/v1/jobs", alice, json={**HELD, "command": ["sleep", "60"]})
    held = {**HELD, "dependency": f"afterok:{blocker['id']}"}
    answers: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def client(who: str, token: str, body: dict[str, Any]) -> None:
        for _ in range(4):
            response = platform.call("POST", "/api/v1/jobs", token, json=body)
            with lock:
                answers.append((who, response.status_code, response.json()))

    bad_cpu = {**HELD, "resources": {"cpu": 64, "memory": "16Mi"}}
    # bob cannot see alice's job: his dependency on it is refused, naming the field.
    hidden = {**HELD, "dependency": f"afterok:{blocker['id']}"}
    clients = [
        *(threading.Thread(target=client, args=("alice", alice, held)) for _ in range(6)),
        threading.Thread(target=client, args=("too-big", alice, bad_cpu)),
        threading.Thread(target=client, args=("bob-hidden", bob, hidden)),
        threading.Thread(target=client, args=("bob", bob, HELD)),
    ]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(120)
    assert len(answers) == 9 * 4
    accepted = [body for who, status, body in answers if status == 201]
    assert {who for who, status, _ in answers if status == 201} == {"alice", "bob"}
    assert len(accepted) == 7 * 4 and len({job["id"] for job in accepted}) == 7 * 4
    refusals = {(who, status, body["field"]) for who, status, body in answers if status != 201}
    assert refusals == {("too-big", 422, "resources"), ("bob-hidden", 404, "dependency")}
    for job in accepted:  # each answer is its own job, in its submitter's tenant
        assert job["state"] == "pending"
        assert (job["user"], job["tenant"]) in {("alice", "physics"), ("bob", "chem")}
    # Every answered job is committed, with its creation event.
    for job in accepted:
        detail = platform.ok(
            "GET", f"/api/v1/jobs/{job['id']}", alice if job["user"] == "alice" else bob
        )
        assert detail["events"][0]["to_state"] == "pending"
    listed = {j["id"] for j in platform.ok("GET", "/api/v1/jobs", params={"limit": 1000})}
    assert {job["id"] for job in accepted} <= listed
    # Every accepted submit went through the group commit (a refusal may come before it).
    assert platform.context.submits.works >= len(accepted)


def test_the_fast_path_answers_as_the_endpoint_does(platform: Platform) -> None:
    """A cached token and a valid body are answered by api/fastsubmit.py; any other case
    by the endpoint: the same answers, the same errors, revocation at once."""
    platform.tenant("physics", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    body = {**HELD, "name": "same", "env": {"A": "1"}}
    # The first call of a token reads the database (the endpoint); then it is cached.
    first = platform.ok("POST", "/api/v1/jobs", alice, json=body)
    second = platform.ok("POST", "/api/v1/jobs", alice, json=body)
    volatile = {"id", "submitted_at"}
    assert {k: v for k, v in first.items() if k not in volatile} == {
        k: v for k, v in second.items() if k not in volatile
    }
    assert second["id"] == first["id"] + 1
    # Refused by the service (answered on the fast path) and by validation (the endpoint).
    too_big = platform.call(
        "POST", "/api/v1/jobs", alice, json={**HELD, "resources": {"cpu": 64, "memory": "1Mi"}}
    )
    assert too_big.status_code == 422 and too_big.json()["field"] == "resources"
    missing = platform.call(
        "POST", "/api/v1/jobs", alice, json={**HELD, "dependency": "afterok:99999"}
    )
    assert (missing.status_code, missing.json()["field"]) == (404, "dependency")
    bad = platform.call("POST", "/api/v1/jobs", alice, json={**HELD, "resources": {"cpu": "x"}})
    assert bad.status_code == 422 and bad.json()["field"] == "resources.cpu"
    unknown = platform.call("POST", "/api/v1/jobs", alice, json={**HELD, "colour": "red"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "colour"
    not_json = platform.http.post(
        "/api/v1/jobs",
        content=b"{",
        headers={"Authorization": f"Bearer {alice}", "Content-Type": "application/json"},
    )
    assert not_json.status_code in (400, 422)
    # A revoked token is refused at once, cached or not.
    mine = platform.ok("GET", "/api/v1/tokens", alice)
    for token in mine:
        assert platform.call("DELETE", f"/api/v1/tokens/{token['id']}", alice).status_code == 204
    assert platform.call("POST", "/api/v1/jobs", alice, json=body).status_code == 401
    assert [j["name"] for j in platform.ok("GET", "/api/v1/jobs")] == ["same", "same"]
