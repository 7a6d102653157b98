"""``spec.json``, the typed record between the local driver and a task's supervisor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtuai.drivers.local.records import (
    SPEC_VERSION,
    RecordError,
    SupervisorSpec,
    TaskUser,
    read_spec,
    write_spec,
)
from virtuai.host.cgroups import Limits

# What a driver wrote before records were typed (version 0: no "version" key).
OLD = {
    "key": "7.0.0",
    "created_at": 1700000000.5,
    "command": ["sh", "-c", "echo hi"],
    "env": {"PATH": "/usr/bin", "N": 3},
    "workdir": "/work/t",
    "user": {"uid": 1001, "gid": 1001, "name": "vai-t"},
    "cgroup": {"version": 2, "root": "/sys/fs/cgroup"},
    "limits": {"cpu_milli": 500, "memory": 1048576, "pids": 64},
    "walltime_s": 60,
    "kill_grace_s": 5,
    "checkpoint_signal": 10,
    "checkpoint_grace_s": 30,
    "gpu_indices": [0, 1],
    "job_id": "7",
    "tenant": "t",
    "vnode": None,
    "image": None,
}


def test_a_record_written_before_versions_is_read() -> None:
    spec = SupervisorSpec.from_json(OLD)
    assert spec.key == "7.0.0" and spec.command == ("sh", "-c", "echo hi")
    assert spec.env == {"PATH": "/usr/bin", "N": "3"}
    assert spec.user == TaskUser(1001, 1001, "vai-t")
    assert spec.limits == Limits(cpu_milli=500, memory=1048576, pids=64)
    assert (spec.checkpoint_signal, spec.checkpoint_grace_s, spec.gpu_indices) == (10, 30, (0, 1))
    assert spec.version == SPEC_VERSION  # as read now; written again, it says so


def test_round_trip_says_its_version(tmp_path: Path) -> None:
    spec = SupervisorSpec.from_json(OLD)
    write_spec(tmp_path, spec)
    data = json.loads((tmp_path / "spec.json").read_text())
    assert data["version"] == SPEC_VERSION
    assert read_spec(tmp_path) == spec


def test_missing_checkpoint_grace_is_the_kill_grace() -> None:
    spec = SupervisorSpec.from_json({k: v for k, v in OLD.items() if k != "checkpoint_grace_s"})
    assert spec.checkpoint_grace_s == 5


def test_a_newer_record_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="newer than this supervisor"):
        SupervisorSpec.from_json({**OLD, "version": SPEC_VERSION + 1})
    (tmp_path / "spec.json").write_text(json.dumps({**OLD, "version": SPEC_VERSION + 1}))
    assert read_spec(tmp_path) is None


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"created_at": 1},
        {**OLD, "key": ""},
        {**OLD, "user": {"uid": "x", "gid": 1, "name": "n"}},
        {**OLD, "limits": {"memory": "lots"}},
        {**OLD, "cgroup": "v2"},
    ],
)
def test_a_malformed_record_is_a_record_error(bad: object) -> None:
    with pytest.raises(RecordError):
        SupervisorSpec.from_json(bad)


def test_a_missing_or_unreadable_file_is_none(tmp_path: Path) -> None:
    assert read_spec(tmp_path) is None
    (tmp_path / "spec.json").write_text("{not json")
    assert read_spec(tmp_path) is None
