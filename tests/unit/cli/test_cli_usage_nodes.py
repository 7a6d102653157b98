"""`virtuai usage` and `virtuai nodes`."""

from __future__ import annotations

from cli_fakes import FakeApi, plain, run

ROW = {
    "tenant": "ml",
    "user": "alice",
    "jobs": 3,
    "tasks": 5,
    "wall_s": 7200.0,
    "cpu_s": 36000.0,
    "gpu_s": 3600.0,
    "memory_gb_s": 1800.0,
}


def test_usage_in_hours(api: FakeApi) -> None:
    api.on("GET", "/api/v1/usage", {"rows": [ROW], "totals": [{**ROW, "user": ""}]})
    result = run(["usage", "--tenant", "ml", "--since", "2026-05-01"])
    assert result.exit_code == 0, result.output
    assert api.requests[0].query == {"tenant": "ml", "since": "2026-05-01"}
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == [
        "TENANT", "USER", "JOBS", "TASKS", "CPU-HOURS", "GPU-HOURS", "MEM-GB-HOURS", "WALL-HOURS",
    ]  # fmt: skip
    assert lines[1] == ["ml", "alice", "3", "5", "10.00", "1.00", "0.50", "2.00"]
    assert lines[2] == ["Totals", "per", "tenant:"]
    assert lines[4] == ["ml", "3", "5", "10.00", "1.00", "0.50", "2.00"]


def test_usage_checks_the_date(api: FakeApi) -> None:
    result = run(["usage", "--since", "last week"])
    assert result.exit_code == 2
    assert "--since" in plain(result.stderr)
    assert api.requests == []


def test_usage_when_empty(api: FakeApi) -> None:
    api.on("GET", "/api/v1/usage", {"rows": [], "totals": []})
    assert run(["usage"]).stdout == "no usage recorded\n"


def test_nodes(api: FakeApi) -> None:
    node = {
        "name": "node-a",
        "site": "local",
        "pool": "default",
        "capacity": {"cpu": 16.0, "memory": 64 * 2**30, "gpu": 2},
        "allocated": {"cpu": 2.5, "memory": 4 * 2**30, "gpu": 1},
        "gpus": [
            {"index": 0, "model": "A100", "memory": 80 * 2**30, "busy": True},
            {"index": 1, "model": "A100", "memory": 80 * 2**30, "busy": False},
        ],
        "updated_at": "2026-05-01T10:00:00Z",
    }
    api.on("GET", "/api/v1/nodes", [node])
    result = run(["nodes"])
    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[1].split()
    assert row[:8] == ["node-a", "local", "default", "2.5/16", "4Gi/64Gi", "1/2", "2x", "A100"]
    assert '"site": "local"' in run(["nodes", "--json"]).stdout
