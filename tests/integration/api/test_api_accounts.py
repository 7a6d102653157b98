"""Tokens that expire and are revoked, users and tenants disabled and deleted, and
membership changes that reveal nothing of other tenants (issue #11)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from support.platform import Platform
from virtuai.store.db import transaction
from virtuai.store.models import ApiTokenRow


def test_tokens_are_named_listed_expire_and_are_revoked_at_once(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    made = platform.call("POST", "/api/v1/tokens", alice, json={"name": "laptop", "expires": "30d"})
    assert made.status_code == 201, made.text
    token = made.json()
    assert set(token) == {"id", "name", "token", "created_at", "expires_at"}
    assert token["name"] == "laptop" and token["token"].startswith("vai_")
    created = dt.datetime.fromisoformat(token["created_at"])
    assert dt.datetime.fromisoformat(token["expires_at"]) - created == dt.timedelta(days=30)

    assert platform.call("GET", "/api/v1/whoami", token["token"]).status_code == 200
    listed = platform.ok("GET", "/api/v1/tokens", token["token"])
    assert [t["name"] for t in listed] == [None, "laptop"]  # the first one, then the new one
    assert set(listed[1]) == {
        "id",
        "name",
        "user",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    assert listed[1]["user"] == "alice" and listed[1]["last_used_at"] is not None
    assert "token" not in listed[1] and "token_hash" not in listed[1]

    # Revoked: 401 at the very next request.
    assert platform.call("DELETE", f"/api/v1/tokens/{token['id']}", alice).status_code == 204
    refused = platform.call("GET", "/api/v1/whoami", token["token"])
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]
    assert platform.ok("GET", "/api/v1/tokens", alice)[1]["revoked_at"] is not None

    # Expired: 401 at once, too.
    second = platform.ok("POST", "/api/v1/tokens", alice, json={"expires": "1h"})
    assert platform.call("GET", "/api/v1/whoami", second["token"]).status_code == 200
    with transaction(platform.sessions) as session:
        session.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == second["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    expired = platform.call("GET", "/api/v1/whoami", second["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["message"]


def test_tokens_of_others_are_theirs_alone(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "physics")
    alices = platform.ok("GET", "/api/v1/tokens", alice)[0]
    # Bob can neither see nor revoke Alice's tokens; the id looks missing.
    assert platform.call("DELETE", f"/api/v1/tokens/{alices['id']}", bob).status_code == 404
    assert platform.call("GET", "/api/v1/tokens", bob, params={"user": "alice"}).status_code == 403
    assert platform.call("GET", "/api/v1/tokens", bob, params={"all": True}).status_code == 403
    # Administrators can.
    assert [t["user"] for t in platform.ok("GET", "/api/v1/tokens", params={"user": "alice"})] == [
        "alice"
    ]
    assert {"admin", "alice", "bob"} <= {
        t["user"] for t in platform.ok("GET", "/api/v1/tokens", params={"all": True})
    }
    assert platform.call("DELETE", f"/api/v1/tokens/{alices['id']}").status_code == 204
    assert platform.call("GET", "/api/v1/whoami", alice).status_code == 401


def test_bad_token_requests_name_the_field(platform: Platform) -> None:
    for body, field in (
        ({"expires": "forever"}, "expires"),
        ({"expires": "0"}, "expires"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\x00b"}, "name"),
    ):
        response = platform.call("POST", "/api/v1/tokens", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field
    assert platform.call("DELETE", "/api/v1/tokens/99999999999").status_code == 422


def test_disabled_users_cannot_authenticate_until_enabled(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    member = platform.call("POST", "/api/v1/users/alice/disable", alice)
    assert member.status_code == 403  # only administrators
    disabled = platform.ok("POST", "/api/v1/users/alice/disable")
    assert disabled["disabled_at"] is not None
    refused = platform.call("GET", "/api/v1/whoami", alice)
    assert refused.status_code == 401 and "disabled" in refused.json()["message"]
    platform.ok("POST", "/api/v1/users/alice/enable")
    assert platform.call("GET", "/api/v1/whoami", alice).status_code == 200
    assert platform.call("POST", "/api/v1/users/admin/disable").status_code == 422  # yourself


def test_users_are_deleted_only_without_live_work(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    platform.user("bea", "physics")
    job = platform.submit(alice, ["sleep", "30"])
    busy = platform.call("DELETE", "/api/v1/users/alice")
    assert busy.status_code == 409 and "1 job" in busy.json()["message"]
    platform.ok("POST", f"/api/v1/jobs/{job['id']}/cancel", alice)
    platform.wait_for([job["id"]])
    assert platform.call("DELETE", "/api/v1/users/alice").status_code == 204
    assert platform.call("GET", "/api/v1/whoami", alice).status_code == 401
    assert "alice" not in [u["name"] for u in platform.ok("GET", "/api/v1/users")]
    # Her jobs stay for accounting; her name stays with them.
    assert platform.job(job["id"])["user"] == "alice"
    again = platform.call("POST", "/api/v1/users", json={"name": "alice", "tenant": "physics"})
    assert again.status_code == 409
    # A user that never ran anything is removed outright: the name is free again.
    assert platform.call("DELETE", "/api/v1/users/bea").status_code == 204
    platform.user("bea", "physics")


def test_disabled_tenants_take_no_new_work(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    assert platform.ok("POST", "/api/v1/tenants/physics/disable")["disabled_at"] is not None
    refused = platform.call("POST", "/api/v1/jobs", alice, json={"command": ["true"]})
    assert refused.status_code == 409 and "disabled" in refused.json()["message"]
    assert platform.ok("POST", "/api/v1/tenants/physics/enable")["disabled_at"] is None
    platform.submit(alice, ["true"])


def test_tenants_with_live_work_are_deleted_only_with_force(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("empty")
    alice = platform.user("alice", "physics")
    running = platform.submit(alice, ["sleep", "60"])
    platform.wait_for([running["id"]], {"running"})
    waiting = platform.submit(alice, ["true"], dependency=f"afterok:{running['id']}")

    busy = platform.call("DELETE", "/api/v1/tenants/physics")
    assert busy.status_code == 409 and "2 jobs" in busy.json()["message"]
    assert platform.call("DELETE", "/api/v1/tenants/physics", alice).status_code == 403

    assert platform.call("DELETE", "/api/v1/tenants/physics?force=true").status_code == 204
    ended = platform.wait_for([running["id"], waiting["id"]])
    assert {j["state"] for j in ended.values()} == {"cancelled"}
    assert "deleted" in ended[waiting["id"]]["reason"]
    assert platform.call("GET", "/api/v1/tenants/physics").status_code == 404
    assert "physics" not in [t["name"] for t in platform.ok("GET", "/api/v1/tenants")]
    assert platform.call("GET", "/api/v1/whoami", alice).json()["tenants"] == []
    # Its history is kept, and its name with it.
    assert platform.call("POST", "/api/v1/tenants", json={"name": "physics"}).status_code == 409
    # An empty tenant goes at once, and its name is free again.
    assert platform.call("DELETE", "/api/v1/tenants/empty").status_code == 204
    platform.tenant("empty")


def test_owners_manage_only_their_own_members_and_learn_nothing_else(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("biology")
    platform.tenant("chemistry")
    owner = platform.user("olga", "physics", role="owner")
    bob = platform.user("bob", "biology")
    platform.ok("PUT", "/api/v1/users/bob/membership", json={"tenant": "chemistry"})
    carl = platform.user("carl", "physics")

    # The probe's attack: an owner pulls another tenant's user into their tenant.
    stolen = platform.call(
        "PUT", "/api/v1/users/bob/membership", owner, json={"tenant": "physics", "role": "owner"}
    )
    assert stolen.status_code == 404 and stolen.json()["message"] == "user 'bob' not found"
    assert "biology" not in stolen.text and "chemistry" not in stolen.text
    assert [t["tenant"] for t in platform.ok("GET", "/api/v1/whoami", bob)["tenants"]] == [
        "biology",
        "chemistry",
    ]
    # Members of the tenant: the owner changes their role and sees only this tenant of theirs.
    platform.ok("PUT", "/api/v1/users/carl/membership", json={"tenant": "biology"})
    changed = platform.ok(
        "PUT", "/api/v1/users/carl/membership", owner, json={"tenant": "physics", "role": "viewer"}
    )
    assert changed["tenants"] == [{"tenant": "physics", "role": "viewer"}]
    # Removing and adding back a user an administrator created for the tenant.
    removed = platform.ok("DELETE", "/api/v1/users/carl/membership/physics", owner)
    assert removed["tenants"] == []
    assert (
        platform.call("GET", "/api/v1/jobs", carl, params={"tenant": "physics"}).status_code == 404
    )
    platform.ok("PUT", "/api/v1/users/carl/membership", owner, json={"tenant": "physics"})
    # An owner cannot take anyone out of another tenant.
    assert platform.call("DELETE", "/api/v1/users/bob/membership/biology", owner).status_code == 404
    # The victim can be freed of an unwanted membership by the tenant's owner or an admin.
    platform.ok("DELETE", "/api/v1/users/bob/membership/chemistry")
    assert [t["tenant"] for t in platform.ok("GET", "/api/v1/whoami", bob)["tenants"]] == [
        "biology"
    ]


def test_usage_is_bounded_by_since_and_until(platform: Platform) -> None:
    """What `virtuai report --month` asks for: tasks that ended in [since, until)."""
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    job = platform.submit(alice, ["true"])
    platform.wait_for([job["id"]])
    today = dt.datetime.now(dt.UTC).date()
    tomorrow, yesterday = today + dt.timedelta(days=1), today - dt.timedelta(days=1)
    inside = platform.ok(
        "GET", "/api/v1/usage", params={"since": str(today), "until": str(tomorrow)}
    )
    assert [(r["tenant"], r["jobs"]) for r in inside["totals"]] == [("physics", 1)]
    before = platform.ok("GET", "/api/v1/usage", params={"until": str(yesterday)})
    assert before == {"rows": [], "totals": [], "by_site": []}
    bad = platform.call("GET", "/api/v1/usage", params={"until": "soon"})
    assert bad.status_code == 422 and bad.json()["field"] == "until"
