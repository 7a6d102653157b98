"""`virtuai whoami` and `virtuai user ...`."""

from __future__ import annotations

from cli_fakes import FakeApi, run

USER = {
    "name": "bob",
    "is_admin": False,
    "source": "local",
    "tenants": [{"tenant": "ml", "role": "member"}],
    "created_at": "2026-05-01T10:00:00Z",
}


def test_whoami(api: FakeApi) -> None:
    me = {"name": "alice", "is_admin": True, "tenants": [{"tenant": "ml", "role": "owner"}]}
    api.on("GET", "/api/v1/whoami", me)
    result = run(["whoami"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        "User:    alice",
        "Admin:   yes",
        "Tenants: ml (owner)",
    ]


def test_user_create_prints_the_token_alone_on_stdout(api: FakeApi) -> None:
    api.on("POST", "/api/v1/users", {"user": USER, "token": "vai_new"}, status=201)
    result = run(["user", "create", "bob", "--tenant", "ml", "--role", "viewer"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "vai_new\n"
    assert "export VIRTUAI_TOKEN=vai_new" in result.stderr
    assert result.stderr.count("\n") == 1
    assert api.requests[0].body == {"name": "bob", "tenant": "ml", "role": "viewer", "admin": False}


def test_user_create_rejects_an_unknown_role(api: FakeApi) -> None:
    assert run(["user", "create", "bob", "--role", "king"]).exit_code == 2
    assert api.requests == []


def test_user_list(api: FakeApi) -> None:
    api.on("GET", "/api/v1/users", [USER])
    rows = [line.split() for line in run(["user", "list"]).stdout.splitlines()]
    assert rows[0] == ["NAME", "ADMIN", "SOURCE", "TENANTS", "CREATED"]
    assert rows[1][:5] == ["bob", "no", "local", "ml", "(member)"]


def test_user_token(api: FakeApi) -> None:
    api.on("POST", "/api/v1/users/bob/tokens", {"token": "vai_again"}, status=201)
    result = run(["user", "token", "bob"])
    assert (result.exit_code, result.stdout) == (0, "vai_again\n")
