"""A job's task launched through the local driver into a virtual node."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from vc_helpers import sh

from virtuai.domain.resources import Resources
from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.base import Handle, LogStream, StopReason, TaskResult, TaskSpec
from virtuai.drivers.local import LocalDriver
from virtuai.errors import DriverError
from virtuai.host.sandbox import VirtualNode
from virtuai.settings import LocalDriverSettings
from virtuai.vcruntime import VcRuntime, VcSpec

NODE = "vnode-host"


@pytest.fixture
def driver(tmp_path: Path, runtime: VcRuntime) -> Iterator[LocalDriver]:
    settings = LocalDriverSettings(
        kill_grace_s=1,
        cgroup_name=runtime.config.cgroup_parent + "-tasks",  # unused: tasks go in the node's
        user_prefix=runtime.config.user_prefix,
        max_pids=128,
    )
    driver = LocalDriver(tmp_path / "tasks", settings, node_name=NODE)
    yield driver
    if driver.cgroups is not None:
        for root in set(driver.cgroups.roots.values()):
            (Path(root) / driver.cgroups.parent).rmdir()


def task(vc: VcSpec, command: list[str], vnode: VirtualNode, env: dict[str, str]) -> TaskSpec:
    return TaskSpec(
        job_id=f"vj{uuid.uuid4().hex[:8]}",
        attempt=0,
        index=0,
        tenant=vc.tenant,
        command=tuple(command),
        env=env,
        workdir="/shared",  # a path inside the node
        node=NODE,
        resources=Resources(cpu_milli=250, memory=128 * 2**20),
        gpu_indices=(),
        walltime_s=60,
        kill_grace_s=1,
        vnode=vnode,
    )


def wait_result(driver: LocalDriver, handle: Handle, timeout: float = 15.0) -> TaskResult:
    deadline = time.monotonic() + timeout
    while (result := driver.observe(handle)) is None:
        assert time.monotonic() < deadline, "the task did not end"
        time.sleep(0.05)
    return result


def test_task_runs_inside_the_node(runtime: VcRuntime, vc: VcSpec, driver: LocalDriver) -> None:
    sh(runtime, vc.id, 0, "echo from-node-0 > /shared/data")
    ref = runtime.vnode(vc.id, 1)
    script = (
        "hostname; pwd; cat /shared/data; id -u; cat $VIRTUAI_HOSTFILE | wc -l; "
        "ls /proc | grep -c '^[0-9]'; grep -E '^[0-9]+:(memory|cpu|pids)?:' /proc/self/cgroup | "
        "head -1"
    )
    spec = task(vc, ["sh", "-c", script], ref.node, dict(ref.env))
    handle = driver.launch(spec)
    result = wait_result(driver, handle)
    out = driver.read_log(handle, LogStream.STDOUT, 0, 1 << 16).decode().splitlines()
    err = driver.read_log(handle, LogStream.STDERR, 0, 1 << 16).decode()
    assert result.outcome == TaskOutcome.EXITED, (result, err)
    assert out[0] == vc.hostname(1)
    assert out[1:3] == ["/shared", "from-node-0"]
    assert out[3] != "0"  # the tenant's user
    assert out[4] == "2"  # the hostfile lists both nodes
    # its processes: the node's init (2), the shell and ls/grep of the pipeline, no more
    assert int(out[5]) <= 6
    # the task's cgroup is a child of the node's cgroup
    assert runtime.names(vc.id).cgroup(1) + "/" + spec.key in out[6], out
    spec_json = json.loads((Path(handle["task_dir"]) / "spec.json").read_text())
    assert spec_json["vnode"]["hostname"] == vc.hostname(1)


def test_stop_and_node_loss_end_the_task(
    runtime: VcRuntime, vc: VcSpec, driver: LocalDriver
) -> None:
    ref = runtime.vnode(vc.id, 0)
    handle = driver.launch(task(vc, ["sleep", "60"], ref.node, dict(ref.env)))
    started = Path(handle["task_dir"]) / "started.json"
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver.stop(handle, StopReason.CANCEL)
    result = wait_result(driver, handle)
    assert result.outcome == TaskOutcome.KILLED_CANCEL

    # a task whose node is gone: refused at launch
    runtime.suspend(vc.id)
    with pytest.raises(DriverError, match="not running"):
        driver.launch(task(vc, ["true"], ref.node, {}))
    runtime.resume(vc)
