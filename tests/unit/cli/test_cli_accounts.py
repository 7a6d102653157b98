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


USAGE_ROWS = [
    {
        "tenant": "ml",
        "user": "alice",
        "jobs": 2,
        "tasks": 3,
        "wall_s": 7200.0,
        "cpu_s": 10800.0,
        "gpu_s": 3600.0,
        "memory_gb_s": 36000.0,
    },
    {
        "tenant": "ml",
        "user": "bob",
        "jobs": 1,
        "tasks": 1,
        "wall_s": 1.0,
        "cpu_s": 0.36,
        "gpu_s": 0.0,
        "memory_gb_s": 0.0,
    },
    {
        "tenant": "vision",
        "user": "carl",
        "jobs": 1,
        "tasks": 1,
        "wall_s": 3600.0,
        "cpu_s": 3600.0,
        "gpu_s": 0.0,
        "memory_gb_s": 0.0,
    },
]
USAGE_TOTALS = [
    {**USAGE_ROWS[0], "user": "*", "jobs": 3, "tasks": 4, "cpu_s": 10800.36},
    {**USAGE_ROWS[2], "user": "*"},
]


def test_usage_as_csv_has_exact_numbers(api: FakeApi) -> None:
    api.on("GET", "/api/v1/usage", {"rows": USAGE_ROWS, "totals": USAGE_TOTALS})
    result = run(["usage", "--format", "csv", "--since", "2026-11-01", "--until", "2026-12-01"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "tenant,user,jobs,tasks,cpu_hours,gpu_hours,memory_gb_hours,wall_hours"
    assert lines[1] == "ml,alice,2,3,3.0000,1.0000,10.0000,2.0000"
    assert lines[2] == "ml,bob,1,1,0.0001,0.0000,0.0000,0.0003"
    assert len(lines) == 4
    assert api.requests[0].query == {"since": "2026-11-01", "until": "2026-12-01"}


def test_report_gives_a_month_per_tenant_with_shares(api: FakeApi) -> None:
    api.on("GET", "/api/v1/usage", {"rows": USAGE_ROWS, "totals": USAGE_TOTALS})
    result = run(["report", "--month", "2026-11", "--format", "csv", "--users"])
    assert result.exit_code == 0, result.output
    assert api.requests[0].query == {
        "since": "2026-11-01T00:00:00+00:00",
        "until": "2026-12-01T00:00:00+00:00",
    }
    lines = result.stdout.splitlines()
    assert lines[0].startswith("month,tenant,user,jobs") and lines[0].endswith("gpu_share")
    assert lines[1].startswith("2026-11,ml,,3,4,") and lines[1].endswith(",75.0%,100.0%")
    assert lines[2].startswith("2026-11,ml,alice,")
    assert lines[4].startswith("2026-11,vision,,1,1,") and lines[4].endswith(",25.0%,0.0%")
    table = run(["report", "--month", "2026-12"])
    assert "Usage in 2026-12" in table.stdout and "CPU-SHARE" in table.stdout
    assert api.requests[1].query["until"] == "2027-01-01T00:00:00+00:00"


def test_report_checks_the_month(api: FakeApi) -> None:
    assert run(["report", "--month", "November"]).exit_code == 2
    assert api.requests == []
