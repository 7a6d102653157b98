"""What an outside probe found (issue #11): nonsense refused at submit with the field named,
integers bounded to what the database holds, bodies limited before authentication.

Run on SQLite and PostgreSQL: PostgreSQL's 32-bit ids and its refusal of NUL in text
are where a missing bound becomes a 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from support.platform import Platform

ARABIC_ONE = "\u0661"


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi")
    return platform.user("alice", "physics")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"resources": {"cpu": 0, "memory": "128Mi"}}, "resources.cpu", "at least 1m"),
        ({"resources": {"cpu": "0m", "memory": "128Mi"}}, "resources.cpu", "at least 1m"),
        ({"resources": {"cpu": 0.0001, "memory": "128Mi"}}, "resources.cpu", "at least 1m"),
        ({"resources": {"cpu": "1e3", "memory": "128Mi"}}, "resources.cpu", "cannot read"),
        ({"resources": {"cpu": 1, "memory": 0}}, "resources.memory", "at least 1Mi"),
        ({"resources": {"cpu": 1, "memory": "0.1Ki"}}, "resources.memory", "at least 1Mi"),
        ({"resources": {"cpu": 1, "memory": 1024}}, "resources.memory", "at least 1Mi"),
        ({"resources": {"cpu": 1, "memory": 2**70}}, "resources.memory", "at most"),
        ({"resources": {"cpu": 10**30, "memory": "1Gi"}}, "resources.cpu", "at most"),
        ({"resources": {"cpu": ARABIC_ONE, "memory": "1Gi"}}, "resources.cpu", "cannot read"),
        ({"resources": {"cpu": 1, "memory": ARABIC_ONE + "Gi"}}, "resources.memory", "512Mi"),
        ({"time": "8640000000000"}, "time", "at most"),
        ({"time": "100000d"}, "time", "at most"),
        ({"time": "400d"}, "time", "on this platform"),
        ({"time": ARABIC_ONE + "h"}, "time", "cannot read"),
        ({"dependency": "afterok:" + ARABIC_ONE}, "dependency", "cannot read"),
        ({"dependency": "afterok:99999999999"}, "dependency", "cannot read"),
        ({"dependency": "afterok:4294967296"}, "dependency", "up to"),
        ({"array": "0-" + ARABIC_ONE}, "array", "cannot read"),
        ({"array": "0-3%" + ARABIC_ONE}, "array", "whole number"),
        ({"array": "0-999999"}, "array", "at most 10000"),
        ({"signal": "USR1@" + ARABIC_ONE}, "signal", "seconds"),
        ({"env": {"A": "x\x00y"}}, "env", "NUL"),
        ({"env": {f"K{i}": "v" * 30_000 for i in range(10)}}, "env", "128 KiB"),
        ({"workdir": "/tmp/\x00evil"}, "workdir", "NUL"),
        ({"command": ["sh", "-c", "\x00"]}, "command", "NUL"),
    ],
)
def test_nonsense_is_refused_at_submit_naming_the_field(
    platform: Platform, alice: str, body: dict[str, Any], field: str, words: str
) -> None:
    request = {"command": ["true"], "resources": {"cpu": 1, "memory": "128Mi"}, **body}
    response = platform.call("POST", "/api/v1/jobs", alice, json=request)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field, error
    assert words in error["message"], error["message"]
    assert platform.ok("GET", "/api/v1/jobs", alice) == []


def test_the_quota_bypass_is_closed(platform: Platform, alice: str) -> None:
    """A job of 0 CPU or 0 memory would run unlimited and count nothing against quota."""
    for resources in ({"cpu": 0, "memory": "608Mi"}, {"cpu": 1, "memory": 0}, {"cpu": 0}):
        response = platform.call(
            "POST", "/api/v1/jobs", alice, json={"command": ["true"], "resources": resources}
        )
        assert response.status_code == 422, response.text
    ok = platform.submit(alice, ["true"], resources={"cpu": "1m", "memory": "1Mi"})
    assert ok["resources"] == {"cpu": 0.001, "memory": 2**20, "gpu": 0}


@pytest.mark.parametrize(
    ("method", "path", "params", "field"),
    [
        ("GET", "/api/v1/jobs/99999999999999999999999", None, "job_id"),
        ("GET", "/api/v1/jobs/2147483648", None, "job_id"),
        ("GET", "/api/v1/jobs/0", None, "job_id"),
        ("POST", "/api/v1/jobs/18446744073709551616/cancel", None, "job_id"),
        ("POST", "/api/v1/arrays/9223372036854775808/cancel", None, "array_id"),
        ("GET", "/api/v1/jobs", {"array_id": 2**64}, "array_id"),
        ("GET", "/api/v1/jobs/1/logs", {"offset": 2**64}, "offset"),
        ("GET", "/api/v1/jobs/1/logs", {"offset": 2**63 - 1}, "offset"),
        ("GET", "/api/v1/jobs/1/logs", {"task": 2**40}, "task"),
        ("GET", "/api/v1/jobs/" + ARABIC_ONE, None, "job_id"),
    ],
)
def test_integers_beyond_the_database_are_refused(
    platform: Platform, alice: str, method: str, path: str, params: Any, field: str
) -> None:
    platform.submit(alice, ["true"])
    response = platform.call(method, path, alice, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_huge_log_offset_reads_nothing(platform: Platform, alice: str) -> None:
    job = platform.submit(alice, ["echo", "hi"])
    platform.wait_for([job["id"]])
    chunk = platform.ok("GET", f"/api/v1/jobs/{job['id']}/logs", alice, params={"offset": 2**53})
    assert chunk["data"] == "" and chunk["eof"] is True


@pytest.mark.parametrize(
    "quota",
    [
        {"cpu": 2**70},
        {"memory": 2**64},
        {"memory": "99999999999999999999999Ti"},
        {"gpu": 2**64},
        {"cpu": ARABIC_ONE},
    ],
)
def test_quotas_are_bounded(platform: Platform, quota: dict[str, Any]) -> None:
    response = platform.call("POST", "/api/v1/tenants", json={"name": "huge", "quota": quota})
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith("quota.")
    assert platform.call("GET", "/api/v1/tenants/huge").status_code == 404


def test_nul_in_the_url_is_refused(platform: Platform, alice: str) -> None:
    for path in ("/api/v1/vclusters/a%00b", "/api/v1/jobs?tenant=a%00b"):
        response = platform.call("GET", path, alice)
        assert response.status_code == 422, (path, response.text)
        assert "NUL" in response.json()["message"]


def test_bodies_over_the_limit_are_refused_before_authentication(platform: Platform) -> None:
    big = b'{"command": ["true"], "name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = platform.http.post(
        "/api/v1/jobs", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text  # not 401: nothing was read
    assert response.json()["field"] == "body"

    def chunked() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    response = platform.http.post(
        "/api/v1/jobs",
        content=chunked(),
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 413, response.text
    # Under the limit, the request goes through as before.
    assert platform.call("GET", "/api/v1/whoami").status_code == 200
