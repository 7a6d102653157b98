"""Fixtures for driver tests: real processes, real cgroups, real Unix users; nothing mocked."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_helpers import NODE, USER_PREFIX, MakeSpec

from virtuai.domain.resources import Resources
from virtuai.drivers.base import TaskSpec
from virtuai.drivers.local import LocalDriver
from virtuai.host.cgroups import detect_layout
from virtuai.host.users import unix_name
from virtuai.settings import DeclaredGpu, LocalDriverSettings

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _skip_root_tests_when_not_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (cgroups, per-tenant Unix users)")


@pytest.fixture(scope="session")
def cgroup_name() -> Iterator[str]:
    """A parent cgroup of our own, so tests never touch a real server's tasks."""
    name = f"virtuai-test-{uuid.uuid4().hex[:8]}"
    yield name
    layout, _ = detect_layout(name)
    if layout is not None:
        for root in set(layout.roots.values()):
            parent = Path(root) / name
            if parent.is_dir():
                leftovers = [p.name for p in parent.iterdir() if p.is_dir()]
                assert not leftovers, f"task cgroups left behind: {leftovers}"
                parent.rmdir()


@pytest.fixture(scope="session")
def tenant() -> Iterator[str]:
    """A tenant name unique to this run; its Unix user is deleted at the end."""
    name = f"tdrv-{uuid.uuid4().hex[:6]}"
    yield name
    if os.geteuid() == 0:
        subprocess.run(["userdel", unix_name(name, USER_PREFIX)], capture_output=True, check=False)


@pytest.fixture
def workdir() -> Iterator[str]:
    """A working directory a tenant user can reach (pytest's tmp_path is 0700 under root)."""
    path = tempfile.mkdtemp(prefix="vai-wd-")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(cgroup_name: str) -> LocalDriverSettings:
    return LocalDriverSettings(
        kill_grace_s=1,
        cgroup_name=cgroup_name,
        user_prefix=USER_PREFIX,
        gpus=[DeclaredGpu(model="test-gpu", memory=8 * 2**30), DeclaredGpu(model="test-gpu")],
        max_pids=256,
    )


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    return tmp_path / "tasks"


@pytest.fixture
def driver(runtime_dir: Path, settings: LocalDriverSettings) -> LocalDriver:
    return LocalDriver(runtime_dir, settings, node_name=NODE)


@pytest.fixture
def make_spec(tenant: str, workdir: str) -> MakeSpec:
    def make(command: list[str] | tuple[str, ...], **overrides: Any) -> TaskSpec:
        fields: dict[str, Any] = {
            "job_id": f"job{os.getpid()}x{next(_counter)}",
            "attempt": 0,
            "index": 0,
            "tenant": tenant,
            "command": tuple(command),
            "env": {},
            "workdir": workdir,
            "node": NODE,
            "resources": Resources(cpu_milli=1000, memory=512 * 2**20),
            "gpu_indices": (),
            "walltime_s": 60,
            "kill_grace_s": 1,
        }
        fields.update(overrides)
        return TaskSpec(**fields)

    return make
