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
    assert platform.context.submits.works >= len(answers)
