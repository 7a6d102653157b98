"""Polling helpers for driver tests: small intervals and a timeout, never a fixed sleep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtuai.drivers.base import Handle, TaskResult, TaskSpec
from virtuai.drivers.local import LocalDriver

NODE = "node-test"
USER_PREFIX = "vai-"
MakeSpec = Callable[..., TaskSpec]


def wait_result(driver: LocalDriver, handle: Handle, timeout: float = 10.0) -> TaskResult:
    deadline = time.monotonic() + timeout
    while True:
        result = driver.observe(handle)
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"task {handle['key']} did not end in {timeout}s"
        time.sleep(0.02)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_started(handle: Handle, timeout: float = 5.0) -> dict[str, Any]:
    path = Path(handle["task_dir"]) / "started.json"
    wait_for(path.exists, timeout, "started.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def cgroup_dirs(driver: LocalDriver, key: str) -> list[Path]:
    """Where the task's cgroup directories would be (empty when cgroups are off)."""
    if driver.cgroups is None:
        return []
    return driver.cgroups.task(key).dirs()


def assert_cgroup_gone(driver: LocalDriver, key: str) -> None:
    left = [p for p in cgroup_dirs(driver, key) if p.exists()]
    assert not left, f"cgroup directories left: {left}"
