"""`virtuai tenant ...` and `virtuai quota ...`."""

from __future__ import annotations

from typing import Any

from cli_fakes import FakeApi, plain, run

ML = "/api/v1/tenants/ml"


def tenant(**changes: Any) -> dict[str, Any]:
    return {
        "name": "ml",
        "quota": {"cpu": 8.0, "memory": 16 * 2**30, "gpu": None},
        "usage": {"cpu": 2.5, "memory": 4 * 2**30, "gpu": 1},
        "quotas": [
            {
                "pool": "*",
                "nominal": {"cpu": 8.0, "memory": 16 * 2**30, "gpu": None},
                "borrowing_limit": {"cpu": None, "memory": None, "gpu": None},
                "lending_limit": {"cpu": 4.0, "memory": None, "gpu": None},
                "used": {"cpu": 2.5, "memory": 4 * 2**30, "gpu": 1},
                "borrowed": {"cpu": 0.0, "memory": 0, "gpu": 0},
                "lent": {"cpu": 1.5, "memory": 0, "gpu": 0},
            }
        ],
        "cohort": "science",
        "weight": 2.0,
        "role": "owner",
        "created_at": "2026-05-01T10:00:00Z",
        **changes,
    }


def test_create_sends_only_what_was_given(api: FakeApi) -> None:
    api.on("POST", "/api/v1/tenants", tenant(), status=201)
    result = run(["tenant", "create", "ml", "--cpu", "8", "--memory", "16Gi", "--weight", "2"])
    assert (result.exit_code, result.stdout) == (0, "tenant ml created\n")
    assert api.requests[0].body == {
        "name": "ml",
        "quota": {"cpu": "8", "memory": "16Gi"},
        "weight": 2.0,
    }


def test_create_checks_values_first(api: FakeApi) -> None:
    result = run(["tenant", "create", "ml", "--memory", "sixteen"])
    assert result.exit_code == 2
    assert "--memory" in plain(result.stderr)
    assert run(["tenant", "create", "Bad_Name"]).exit_code == 2
    assert run(["tenant", "create", "ml", "--weight", "0"]).exit_code == 2
    assert api.requests == []


def test_list_shows_used_of_quota(api: FakeApi) -> None:
    api.on("GET", "/api/v1/tenants", [tenant()])
    result = run(["tenant", "list"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "CPU", "MEMORY", "GPU", "WEIGHT", "ROLE"]
    assert row.split() == ["ml", "2.5/8", "4Gi/16Gi", "1/-", "2", "owner"]


def test_show(api: FakeApi) -> None:
    api.on("GET", ML, tenant())
    result = run(["tenant", "show", "ml"])
    assert result.exit_code == 0, result.output
    assert "Your role: owner" in result.stdout
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["*", "gpu", "unlimited", "unlimited", "unlimited", "1", "0", "0"] in lines
    assert ["*", "cpu", "8", "unlimited", "4", "2.5", "0", "1.5"] in lines


def test_quota_set_keeps_what_is_not_given(api: FakeApi) -> None:
    api.on("GET", ML, tenant())
    api.on("PUT", f"{ML}/quota", tenant(quota={"cpu": None, "memory": 16 * 2**30, "gpu": 2}))
    result = run(["quota", "set", "ml", "--cpu", "unlimited", "--gpu", "2"])
    assert result.exit_code == 0, result.output
    (put,) = api.sent("PUT", f"{ML}/quota")
    assert put.body == {
        "pool": "*",
        "cpu": None,
        "memory": 16 * 2**30,
        "gpu": 2,
        "borrowing": {"cpu": None, "memory": None, "gpu": None},
        "lending": {"cpu": 4.0, "memory": None, "gpu": None},
    }


def test_quota_set_needs_a_change(api: FakeApi) -> None:
    result = run(["quota", "set", "ml"])
    assert result.exit_code == 2
    assert "nothing to change" in plain(result.stderr)
    assert api.requests == []


def test_quota_set_checks_values(api: FakeApi) -> None:
    assert run(["quota", "set", "ml", "--gpu", "two"]).exit_code == 2
    assert run(["quota", "set", "ml", "--cpu", "lots"]).exit_code == 2
    assert api.requests == []


def test_quota_show_all_and_one(api: FakeApi) -> None:
    api.on("GET", "/api/v1/tenants", [tenant(), tenant(name="cv", usage={}, quota={})])
    api.on("GET", ML, tenant())
    rows = [line.split() for line in run(["quota", "show"]).stdout.splitlines()]
    assert rows == [
        ["TENANT", "CPU", "MEMORY", "GPU"],
        ["ml", "2.5/8", "4Gi/16Gi", "1/-"],
        ["cv", "0/-", "0/-", "0/-"],
    ]
    one = run(["quota", "show", "ml", "--json"])
    assert '"role": "owner"' in one.stdout


def test_tenant_set_says_the_notebook_idle_timeout_it_set(api: FakeApi) -> None:
    updated = {"name": "ml", "weight": 1, "cohort": None, "notebook_idle_timeout": 1800}
    api.on("PATCH", "/api/v1/tenants/ml", updated)
    result = run(["tenant", "set", "ml", "--notebook-idle-timeout", "30m"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "tenant ml: weight 1, cohort -, notebooks culled after 30m idle\n"
