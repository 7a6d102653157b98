"""What schemathesis and hand probes against a real ``virtuai up`` found (Dec 6): each
input below was answered 500, or accepted as something the client did not mean.

Run on SQLite and PostgreSQL: PostgreSQL refuses NUL in text, SQLite 64-bit overflows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.platform import Platform
from virtuai.domain.pyenvs import EnvOptions
from virtuai.services.environments import read_log
from virtuai.store.models import EnvironmentRow


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi")
    return platform.user("alice", "physics")


def post_raw(platform: Platform, path: str, token: str, body: bytes) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return platform.http.post(path, content=body, headers=headers)


@pytest.mark.parametrize("job_id", ["9223372036854775808", "99999999999999999999999"])
def test_a_requeue_of_an_id_beyond_the_database_is_refused(platform: Platform, job_id: str) -> None:
    # Was: OverflowError (Python int too large to convert to SQLite INTEGER), a 500.
    response = platform.call("POST", f"/api/v1/jobs/{job_id}/requeue")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "job_id"


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000],
    ids=["arrays", "objects"],
)
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/jobs/plan", "/api/v1/tenants"])
def test_json_nested_too_deep_is_a_400_naming_the_body(
    platform: Platform, alice: str, path: str, body: bytes
) -> None:
    # Was: RecursionError in the fast submit path (a 500) once the token was cached.
    platform.ok("GET", "/api/v1/whoami", alice)
    response = post_raw(platform, path, alice, body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "body"
    assert platform.ok("GET", "/api/v1/jobs", alice) == []


def test_a_body_that_is_not_json_names_the_body_not_a_character_offset(
    platform: Platform, alice: str
) -> None:
    response = post_raw(platform, "/api/v1/jobs", alice, b'{"command": ["true"]}garbage')
    assert response.status_code == 422, response.text
    error = response.json()
    # Was: {"field": "21", "message": "21: JSON decode error"}.
    assert error["field"] == "body", error
    assert "not valid JSON" in error["message"] and "character 21" in error["message"]


def test_a_method_not_allowed_says_which_are(platform: Platform) -> None:
    response = platform.call("PUT", "/api/v1/jobs")
    assert response.status_code == 405, response.text
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert response.json()["code"] == "http_error"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/users", {"name": "bob", "tenant": "physics", "admin": 1}, "admin"),
        ("/api/v1/users", {"name": "bob", "tenant": "physics", "admin": "yes"}, "admin"),
        ("/api/v1/tenants", {"name": "t2", "quota": {"cpu": True}}, "quota.cpu"),
        ("/api/v1/jobs", {"command": ["true"], "resources": {"cpu": True}}, "resources.cpu"),
        ("/api/v1/jobs", {"command": ["true"], "tasks": True}, "tasks"),
        ("/api/v1/jobs", {"command": ["true"], "requeue": "no"}, "requeue"),
        ("/api/v1/jobs", {"command": ["true"], "time": False}, "time"),
        ("/api/v1/vcs", {"name": "v", "nodes": 1, "gateway": 0}, "gateway"),
        ("/api/v1/nodes/node-1/drain", {"requeue": "yes"}, "requeue"),
    ],
)
def test_booleans_and_numbers_are_not_taken_for_each_other(
    platform: Platform, path: str, body: dict[str, Any], field: str
) -> None:
    # Was: 201/200, with "admin": "yes" an administrator and "cpu": true one CPU.
    platform.tenant("physics", cpu=4, memory="4Gi")
    platform.ok("PUT", "/api/v1/users/admin/membership", json={"tenant": "physics"})
    response = platform.call("POST", path, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field, error
    assert "true or false" in error["message"], error["message"]
    assert "bob" not in [user["name"] for user in platform.ok("GET", "/api/v1/users")]
    assert platform.ok("GET", "/api/v1/jobs") == []
    assert platform.ok("GET", "/api/v1/nodes")[0]["state"] != "draining"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/v1/services",
            {"name": "s1", "command": ["true"], "readiness": {"path": "/\x00"}},
            "readiness.path",
        ),
        ("/api/v1/services", {"name": "s1", "command": ["sh", "\x00"]}, "command"),
        ("/api/v1/datasets", {"name": "d1", "path": "/tmp/a\x00b"}, "path"),
        ("/api/v1/environments", {"name": "e1", "requirements": "numpy\x00"}, "requirements"),
        ("/api/v1/tokens", {"name": "laptop\x00"}, "name"),
        ("/api/v1/jobs", {"command": ["true"], "resources": {"memory": "1Gi\x00"}}, None),
    ],
)
def test_nul_is_refused_in_every_text_of_a_body(
    platform: Platform, alice: str, path: str, body: dict[str, Any], field: str | None
) -> None:
    # Was: the service recorded (201) with a NUL in its readiness path on SQLite, a 500 on
    # PostgreSQL, which cannot store NUL in text.
    response = platform.call("POST", path, alice, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert field is None or error["field"] == field, error
    assert error["field"] and "NUL" in error["message"], error
    assert platform.ok("GET", "/api/v1/services", alice) == []


def test_a_token_for_a_user_refuses_fields_it_would_ignore(platform: Platform, alice: str) -> None:
    # Was: 201 with a token that never expires, though the body asked for "expires".
    response = platform.call("POST", "/api/v1/users/alice/tokens", json={"expires": "1d"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "expires"
    for body in ({}, None):
        response = platform.call("POST", "/api/v1/users/alice/tokens", json=body)
        assert response.status_code == 201, response.text


def test_the_allow_header_names_the_resource_not_a_lookalike(platform: Platform) -> None:
    # /jobs/plan also matches /jobs/{job_id} (GET), which is another resource.
    response = platform.call("OPTIONS", "/api/v1/jobs/plan")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    response = platform.call("PUT", "/api/v1/jobs/12/cancel")
    assert response.headers["allow"] == "POST"


def test_a_service_of_an_empty_program_is_refused(platform: Platform, alice: str) -> None:
    # Was: 201, a service whose replicas could never start.
    body = {"name": "s1", "command": [""]}
    response = platform.call("POST", "/api/v1/services", alice, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "command"
    assert platform.ok("GET", "/api/v1/services", alice) == []


def test_a_created_service_is_a_documented_201(platform: Platform) -> None:
    responses = platform.ok("GET", "/api/v1/openapi.json")["paths"]["/api/v1/services"]["post"]
    assert {"200", "201"} <= set(responses["responses"])


def test_a_tenant_with_a_service_is_live_work(platform: Platform, alice: str) -> None:
    # Found by the stateful fuzzer: the tenant was deleted (204), its service stayed
    # listed as active and could never be deleted (tenant not found).
    platform.ok("POST", "/api/v1/services", alice, json={"name": "s1", "command": ["true"]})
    refused = platform.call("DELETE", "/api/v1/tenants/physics")
    assert refused.status_code == 409, refused.text
    assert "1 service" in refused.json()["message"]
    assert platform.call("DELETE", "/api/v1/tenants/physics?force=true").status_code == 204
    assert [s["state"] for s in platform.ok("GET", "/api/v1/services")] in ([], ["deleting"])


def test_a_tenant_that_owns_only_a_dataset_is_deleted(platform: Platform) -> None:
    # Its dataset row names it: a hard delete failed on the foreign key (a 500).
    platform.tenant("physics", cpu=4, memory="4Gi")
    path = platform.state_dir / "workspaces" / "physics" / "inputs"
    path.mkdir(parents=True)
    body = {"tenant": "physics", "name": "inputs", "path": str(path)}
    platform.ok("POST", "/api/v1/datasets", json=body)
    response = platform.call("DELETE", "/api/v1/tenants/physics")
    assert response.status_code == 204, response.text
    assert platform.call("GET", "/api/v1/tenants/physics").status_code == 404


@pytest.mark.parametrize("offset", [2**53 - 1, 2**53, 6, 100])
def test_an_environment_log_offset_past_its_end_reads_nothing(tmp_path: Path, offset: int) -> None:
    # Was: OSError EINVAL from seek() past what the file system allows (a 500 for
    # GET /environments/{name}/log?offset=9007199254740991, found by scripts/fuzz-api.sh).
    options = EnvOptions(tmp_path / "workspaces", tmp_path / "env-logs")
    options.logs_dir.mkdir()
    options.log_path(7).write_text("built\n")
    assert read_log(options, EnvironmentRow(id=7), offset) == ("", offset)
    assert read_log(options, EnvironmentRow(id=7), 0) == ("built\n", 6)


def test_a_method_a_literal_path_does_not_take_is_a_405(platform: Platform) -> None:
    # Was: 422 "job_id: Input should be a valid integer" (GET /jobs/{job_id} with "bulk").
    for path in ("/api/v1/jobs/bulk", "/api/v1/jobs/plan"):
        response = platform.call("GET", path)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"
    # A path that is only a /jobs/{job_id} still names its field.
    response = platform.call("GET", "/api/v1/jobs/abc")
    assert response.status_code == 422 and response.json()["field"] == "job_id"
