"""Authentication, roles and tenant scoping, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from support.platform import Platform
from virtuai.store.models import ApiTokenRow


def test_requests_without_a_valid_token_are_refused(platform: Platform) -> None:
    anonymous = platform.http.get("/api/v1/jobs")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    forged = platform.call("GET", "/api/v1/jobs", token="vai_" + "A" * 43)
    assert forged.status_code == 401
    assert forged.json() == {"code": "unauthenticated", "message": "invalid token", "field": None}


def test_the_bootstrap_administrator_can_do_everything(platform: Platform) -> None:
    me = platform.ok("GET", "/api/v1/whoami")
    assert me["name"] == "admin" and me["is_admin"] is True
    platform.tenant("physics", cpu=8, memory="16Gi", gpu=1)
    assert [t["name"] for t in platform.ok("GET", "/api/v1/tenants")] == ["physics"]


def test_users_see_only_their_own_tenants_and_jobs(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("biology")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "biology")
    job = platform.submit(alice, ["true"])

    assert [t["name"] for t in platform.ok("GET", "/api/v1/tenants", bob)] == ["biology"]
    assert platform.ok("GET", "/api/v1/jobs", bob) == []
    for method, path in [
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("POST", f"/api/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/api/v1/jobs/{job['id']}/logs"),
        ("GET", "/api/v1/tenants/physics"),
    ]:
        response = platform.call(method, path, bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
    # A foreign id and a missing id answer the same.
    missing = platform.call("GET", "/api/v1/jobs/999999", bob)
    foreign = platform.call("GET", f"/api/v1/jobs/{job['id']}", bob)
    assert missing.json()["message"].replace("999999", "X") == foreign.json()["message"].replace(
        str(job["id"]), "X"
    )
    assert platform.call("GET", "/api/v1/jobs?tenant=physics", bob).status_code == 404
    assert [j["id"] for j in platform.ok("GET", "/api/v1/jobs", alice)] == [job["id"]]


def test_viewers_cannot_submit_or_cancel(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    carol = platform.user("carol", "physics", role="viewer")
    job = platform.submit(alice, ["sleep", "30"])
    denied = platform.call("POST", "/api/v1/jobs", carol, json={"command": ["true"]})
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert platform.call("POST", f"/api/v1/jobs/{job['id']}/cancel", carol).status_code == 403
    assert platform.ok("GET", f"/api/v1/jobs/{job['id']}", carol)["id"] == job["id"]


def test_only_administrators_manage_tenants_and_quotas(platform: Platform) -> None:
    platform.tenant("physics")
    owner = platform.user("olga", "physics", role="owner")
    member = platform.user("alice", "physics")
    for token in (owner, member):
        assert (
            platform.call("POST", "/api/v1/tenants", token, json={"name": "x"}).status_code == 403
        )
        response = platform.call("PUT", "/api/v1/tenants/physics/quota", token, json={"cpu": 99})
        assert response.status_code == 403
    # Owners may add users to their own tenant; members may not.
    created = platform.call(
        "POST", "/api/v1/users", owner, json={"name": "dan", "tenant": "physics"}
    )
    assert created.status_code == 201
    assert (
        platform.call(
            "POST", "/api/v1/users", member, json={"name": "eve", "tenant": "physics"}
        ).status_code
        == 403
    )


def test_tokens_are_shown_once_and_stored_hashed(platform: Platform) -> None:
    platform.tenant("physics")
    token = platform.user("alice", "physics")
    assert token.startswith("vai_")
    assert platform.ok("GET", "/api/v1/whoami", token)["name"] == "alice"
    with platform.sessions() as session:
        stored = list(session.scalars(select(ApiTokenRow.token_hash)))
    assert token not in stored and all(len(h) == 64 for h in stored)
    second = platform.ok("POST", "/api/v1/users/alice/tokens", token)["token"]
    assert second != token
    assert platform.ok("GET", "/api/v1/whoami", second)["name"] == "alice"


def test_quota_changes_are_visible(platform: Platform) -> None:
    platform.tenant("physics", cpu=2)
    updated = platform.ok(
        "PUT", "/api/v1/tenants/physics/quota", json={"cpu": "500m", "memory": "4Gi", "gpu": 1}
    )
    assert updated["quota"] == {"cpu": 0.5, "memory": 4 * 2**30, "gpu": 1}
