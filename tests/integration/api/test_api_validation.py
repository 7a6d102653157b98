"""Bad input gets a precise error naming the field, never a traceback; nothing is created."""

from __future__ import annotations

from typing import Any

import pytest

from support.platform import Platform


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi", gpu=1)
    return platform.user("alice", "physics")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"command": []}, "command", "at least 1"),
        ({"command": ["x" * 70_000]}, "command", "64 KiB"),
        ({"command": ["true"], "name": "Bad_Name"}, "name", "pattern"),
        ({"command": ["true"], "resources": {"memory": "lots"}}, "resources.memory", "512Mi"),
        ({"command": ["true"], "resources": {"cpu": "two"}}, "resources.cpu", "500m"),
        ({"command": ["true"], "resources": {"gpu": -1}}, "resources.gpu", "greater than"),
        ({"command": ["true"], "time": "soon"}, "time", "HH:MM:SS"),
        ({"command": ["true"], "time": "0"}, "time", "longer than zero"),
        ({"command": ["true"], "tasks": 0}, "tasks", "greater than"),
        ({"command": ["true"], "env": {f"K{i}": "v" for i in range(300)}}, "env", "256"),
        ({"command": ["true"], "env": {"1BAD": "v"}}, "env.1BAD", "pattern"),
        ({"command": ["true"], "workdir": "relative/dir"}, "workdir", "absolute"),
        ({"command": ["true"], "priority": "urgent"}, "priority", "low, normal, high"),
        ({"command": ["true"], "colour": "blue"}, "colour", "not permitted"),
        ({"command": ["true"], "tenant": "biology"}, "tenant", "not found"),
    ],
)
def test_bad_job_requests_name_the_field(
    platform: Platform, alice: str, body: dict[str, Any], field: str, words: str
) -> None:
    response = platform.call("POST", "/api/v1/jobs", alice, json=body)
    assert response.status_code in (404, 422), response.text
    error = response.json()
    assert set(error) == {"code", "message", "field"}
    assert error["field"] == field
    assert words in error["message"], error["message"]
    assert "Traceback" not in response.text
    assert platform.ok("GET", "/api/v1/jobs", alice) == []


@pytest.mark.parametrize(
    ("resources", "tasks", "message"),
    [
        (
            {"cpu": 1, "memory": "5Gi"},
            1,
            "can never run: needs 5Gi memory in total but tenant physics has a quota of 4Gi memory",
        ),
        (
            {"cpu": 1, "memory": "1Gi", "gpu": 1},
            2,
            "can never run: needs 2 gpu in total but tenant physics has a quota of 1 gpu",
        ),
    ],
)
def test_requests_over_the_quota_are_refused_at_submit(
    platform: Platform, alice: str, resources: dict[str, Any], tasks: int, message: str
) -> None:
    response = platform.call(
        "POST",
        "/api/v1/jobs",
        alice,
        json={"command": ["true"], "resources": resources, "tasks": tasks},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "unschedulable"
    assert response.json()["message"] == message


def test_requests_larger_than_the_machine_are_refused_at_submit(platform: Platform) -> None:
    platform.tenant("big")  # no quota: only the machine limits
    token = platform.user("bea", "big")
    response = platform.call(
        "POST",
        "/api/v1/jobs",
        token,
        json={"command": ["true"], "resources": {"cpu": 1, "memory": "1Gi", "gpu": 4}},
    )
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "unschedulable" and error["field"] == "resources"
    assert "gpu" in error["message"] and "largest node has 2" in error["message"]


def test_unknown_routes_and_methods_answer_in_the_same_shape(platform: Platform) -> None:
    response = platform.call("GET", "/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = platform.call("GET", "/api/v1/jobs/not-a-number")
    assert response.status_code == 422 and response.json()["field"] == "job_id"


def test_duplicate_names_conflict(platform: Platform) -> None:
    platform.tenant("physics")
    again = platform.call("POST", "/api/v1/tenants", json={"name": "physics"})
    assert again.status_code == 409
    assert again.json() == {
        "code": "conflict",
        "message": "tenant 'physics' already exists",
        "field": "name",
    }


def test_the_openapi_document_is_served(platform: Platform) -> None:
    document = platform.http.get("/api/v1/openapi.json").json()
    assert "/api/v1/jobs" in document["paths"]
    assert platform.http.get("/healthz").json() == {"status": "ok"}
