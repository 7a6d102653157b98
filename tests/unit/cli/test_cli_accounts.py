"""`virtuai token ...`, and disabling and deleting users and tenants."""

from __future__ import annotations

from cli_fakes import FakeApi, Raw, run

TOKEN = {
    "id": 7,
    "name": "laptop",
    "user": "alice",
    "created_at": "2026-11-01T10:00:00Z",
    "expires_at": None,
    "last_used_at": "2026-11-02T10:00:00Z",
    "revoked_at": None,
}


def test_token_create_prints_the_token_alone_on_stdout(api: FakeApi) -> None:
    issued = {
        "id": 7,
        "name": "laptop",
        "token": "vai_new",
        "created_at": "2026-11-01T10:00:00Z",
        "expires_at": "2026-12-01T10:00:00Z",
    }
    api.on("POST", "/api/v1/tokens", issued, status=201)
    result = run(["token", "create", "--name", "laptop", "--expires", "30d"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "vai_new\n"
    assert "valid until" in result.stderr and "shown only this once" in result.stderr
    assert api.requests[0].body == {"name": "laptop", "expires": "30d"}


def test_token_create_checks_the_lifetime_before_asking(api: FakeApi) -> None:
    assert run(["token", "create", "--expires", "soon"]).exit_code == 2
    assert api.requests == []


def test_token_list_shows_last_use_and_state(api: FakeApi) -> None:
    revoked = {**TOKEN, "id": 8, "name": None, "revoked_at": "2026-11-03T10:00:00Z"}
    api.on("GET", "/api/v1/tokens", [TOKEN, revoked])
    result = run(["token", "list", "--user", "alice"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0][:4] == ["ID", "NAME", "USER", "CREATED"]
    assert rows[1][0] == "7" and rows[1][-1] == "active" and "never" in rows[1]
    assert rows[2][0] == "8" and rows[2][-1] == "revoked"
    assert api.requests[0].query == {"user": "alice"}


def test_token_revoke(api: FakeApi) -> None:
    api.on("DELETE", "/api/v1/tokens/7", Raw(204, ""))
    result = run(["token", "revoke", "7"])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.stderr


def test_accounts_are_disabled_enabled_and_deleted(api: FakeApi) -> None:
    user = {"name": "bob", "is_admin": False, "source": "local", "tenants": [], "created_at": "x"}
    tenant: dict[str, object] = {"name": "ml"}
    for method, path, reply in (
        ("POST", "/api/v1/users/bob/disable", user),
        ("POST", "/api/v1/users/bob/enable", user),
        ("DELETE", "/api/v1/users/bob", Raw(204, "")),
        ("DELETE", "/api/v1/users/bob/membership/ml", user),
        ("POST", "/api/v1/tenants/ml/disable", tenant),
        ("POST", "/api/v1/tenants/ml/enable", tenant),
        ("DELETE", "/api/v1/tenants/ml", Raw(204, "")),
    ):
        api.on(method, path, reply)
    for args in (
        ["user", "disable", "bob"],
        ["user", "enable", "bob"],
        ["user", "delete", "bob"],
        ["user", "remove", "bob", "--tenant", "ml"],
        ["tenant", "disable", "ml"],
        ["tenant", "enable", "ml"],
        ["tenant", "delete", "ml", "--force"],
    ):
        result = run(args)
        assert result.exit_code == 0, (args, result.output)
    assert api.requests[-1].query == {"force": "true"}


def test_a_refused_delete_is_one_line(api: FakeApi) -> None:
    refusal = {"code": "conflict", "message": "tenant 'ml' has live work (2 jobs)", "field": "name"}
    api.on("DELETE", "/api/v1/tenants/ml", (409, refusal))
    result = run(["tenant", "delete", "ml"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: tenant 'ml' has live work (2 jobs) (field: name)"
