"""`virtuai usage`, `virtuai nodes` and `virtuai site add`'s files."""

from __future__ import annotations

from pathlib import Path

import pytest
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


CLUSTER_NODE = {
    "name": "gpu01",
    "class": "gpu",
    "labels": {"ib": "", "rack": "r2"},
    "capacity": {"cpu": 64.0, "memory": 512 * 2**30, "gpu": 8},
    "allocated": {"cpu": 8.0, "memory": 64 * 2**30, "gpu": 2},
    "gpus": [],
    "state": "draining",
    "heartbeat_age_s": 0.4,
    "leader": True,
    "address": "10.0.0.21",
}


def test_node_list_shows_class_labels_state_heartbeat_and_leader(api: FakeApi) -> None:
    api.on("GET", "/api/v1/nodes", [CLUSTER_NODE])
    result = run(["node", "list"])
    assert result.exit_code == 0, result.output
    header, row = (line.split() for line in result.stdout.splitlines()[:2])
    assert header == [
        "NAME", "CLASS", "LABELS", "CPU", "MEMORY", "GPU", "HEARTBEAT", "STATE", "LEADER",
    ]  # fmt: skip
    assert row == ["gpu01", "gpu", "ib,rack=r2", "8/64", "64Gi/512Gi", "2/8", "0s", "draining", "*"]


def test_node_cordon_drain_uncordon(api: FakeApi) -> None:
    for action, state in (("cordon", "cordoned"), ("drain", "draining"), ("uncordon", "ready")):
        api.on("POST", f"/api/v1/nodes/gpu01/{action}", {**CLUSTER_NODE, "state": state})
    assert run(["node", "cordon", "gpu01"]).stdout == "node gpu01: cordoned\n"
    assert run(["node", "drain", "gpu01", "--requeue"]).stdout == "node gpu01: draining\n"
    assert api.sent("POST", "/api/v1/nodes/gpu01/drain")[0].body == {"requeue": True}
    assert run(["node", "uncordon", "gpu01"]).stdout == "node gpu01: ready\n"


def test_submit_targets_a_class_and_labels(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", (201, {"id": 7}))
    result = run(["submit", "--class", "gpu", "--constraint", "ib", "--", "true"])
    assert result.exit_code == 0, result.output
    body = api.sent("POST", "/api/v1/jobs")[0].body
    assert body["node_class"] == "gpu" and body["constraints"] == ["ib"]


def test_a_site_key_file_that_is_not_text_is_named_before_anything_is_sent(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("key.der").write_bytes(b"0\x82\x01\xff\xfe binary key")
    args = ["site", "add", "hpc", "--slurm", "--login", "me@login", "--identity", "key.der"]
    result = run(args)
    assert result.exit_code == 2
    assert "key.der is not UTF-8 text" in plain(result.stderr)
    assert "--identity" in plain(result.stderr)
    assert api.requests == []
