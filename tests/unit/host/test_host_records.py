"""Records a task leaves on disk: durable ones are fsynced, the others only atomic; the
supervisor's cheap list of its descendants finds what psutil's walk finds."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from virtuai.drivers.local.supervisor import _descendant_pids
from virtuai.host import files


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_durable_records_are_fsynced_and_the_others_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_fsyncs(monkeypatch)
    files.write_json_atomic(tmp_path / "result.json", {"outcome": "exited"})
    assert len(calls) == 2  # the file, then its directory (the rename)
    files.write_json_atomic(tmp_path / "started.json", {"pid": 1}, durable=False)
    assert files.link_json_exclusive(tmp_path / "supervisor.pid", {"pid": 2}, durable=False)
    assert len(calls) == 2
    # Atomic and exclusive all the same; no temporary file left behind.
    assert files.read_json(tmp_path / "started.json") == {"pid": 1}
    assert not files.link_json_exclusive(tmp_path / "supervisor.pid", {"pid": 3}, durable=False)
    assert files.read_json(tmp_path / "supervisor.pid") == {"pid": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "result.json",
        "started.json",
        "supervisor.pid",
    ]
    assert (tmp_path / "started.json").stat().st_mode & 0o777 == 0o600


def test_descendants_from_the_kernels_lists_match_psutils_walk() -> None:
    # A child (sh) with two children of its own, one of which (a subshell) has a child.
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & (sleep 30 & wait) & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process().children(recursive=True)) < 4:
            assert time.monotonic() < deadline, "the process tree did not come up"
            time.sleep(0.01)
        walked = {p.pid for p in psutil.Process().children(recursive=True)}
        assert _descendant_pids() == walked
        assert tree.pid in walked and len(walked) >= 4
    finally:
        for proc in psutil.Process(tree.pid).children(recursive=True):
            proc.kill()
        tree.kill()
        tree.wait()
    assert tree.pid not in _descendant_pids()
