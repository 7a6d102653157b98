"""A virtual cluster as a tenant uses it: a real `virtuai up`, the real CLI, real kernel objects.

Create a cluster, run a command in a node, run a job in it, kill the server
with SIGKILL (and lose a node's network namespace while it is down), start it
again: the cluster is still running and repaired; then delete it, leaving
nothing behind.
"""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server
from support.vclusters import can_run_vcs, close_runtime, free_pool
from virtuai.vcruntime import RuntimeConfig, VcRuntime

pytestmark = pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs()))


@pytest.fixture
def runtime_config() -> Iterator[RuntimeConfig]:
    prefix = "e" + "".join(random.choices(string.ascii_lowercase + string.digits, k=2))
    state = Path(tempfile.mkdtemp(prefix="vai-e2e-vc-", dir="/var/tmp"))
    config = RuntimeConfig(
        state_dir=state,
        prefix=prefix,
        cgroup_parent=f"virtuai-e2evc-{prefix}-{uuid.uuid4().hex[:6]}",
        user_prefix=TEST_USER_PREFIX,
    )
    yield config
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path, runtime_config: RuntimeConfig) -> Iterator[Server]:
    workspaces = public_dir("vai-e2e-vc-ws-")
    tasks_cgroup = f"virtuai-e2evc-tasks-{uuid.uuid4().hex[:6]}"
    server = Server(
        tmp_path / "home",
        tmp_path / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__CPU": "4",
            "VIRTUAI_LOCAL__MEMORY": "4Gi",
            "VIRTUAI_LOCAL__KILL_GRACE_S": "1",
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
            "VIRTUAI_LOCAL__CGROUP_NAME": tasks_cgroup,
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
            "VIRTUAI_VCLUSTERS__STATE_DIR": str(runtime_config.state_dir),
            "VIRTUAI_VCLUSTERS__PREFIX": runtime_config.prefix,
            "VIRTUAI_VCLUSTERS__CGROUP_PARENT": runtime_config.cgroup_parent,
            "VIRTUAI_VCLUSTERS__SUBNET_POOL": free_pool(),
            "VIRTUAI_VCLUSTERS__STOP_GRACE_S": "1",
        },
    )
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()
    runtime = VcRuntime(runtime_config)
    runtime.check_host()
    remove_state(workspaces, ["physics"])
    root = Path("/sys/fs/cgroup")
    for parent in [*root.glob(tasks_cgroup), *root.glob(f"*/{tasks_cgroup}")]:
        parent.rmdir()  # the local driver's parent cgroup, empty once every task ended
    close_runtime(runtime)  # fails if anything of the run was left behind


def test_a_tenant_uses_a_virtual_cluster_across_a_server_crash(
    server: Server, runtime_config: RuntimeConfig
) -> None:
    server.cli("tenant", "create", "physics", "--cpu", "2", "--memory", "2Gi")
    alice = server.cli("user", "create", "alice", "--tenant", "physics").strip()
    images = server.json("image", "list", token=alice)
    assert [(i["name"], i["builtin"]) for i in images] == [("host", True)]

    created = server.cli(
        "vc", "create", "lab", "--nodes", "2", "--cpu-per-node", "0.5",
        "--memory-per-node", "256Mi", "--wait", token=alice,
    )  # fmt: skip
    assert created.startswith("virtual cluster lab: created (running:"), created
    vc = server.json("vc", "show", "lab", token=alice)
    assert [(n["hostname"], n["state"]) for n in vc["nodes"]] == [
        ("lab-0", "running"),
        ("lab-1", "running"),
    ]
    assert "lab-1" in server.cli("vc", "show", "lab", token=alice)

    # vc exec: output streamed back, the command's exit status is the CLI's.
    exec_ = server.run("vc", "exec", "lab", "--node", "1", "--", "sh", "-c",
                       "hostname; id -u; echo err >&2; exit 7", token=alice)  # fmt: skip
    assert exec_.returncode == 7, exec_.stderr
    hostname, uid = exec_.stdout.split()
    assert (hostname, exec_.stderr) == ("lab-1", "err\n") and uid != "0"

    # A job in the cluster: one task per node, the hostfile lists both.
    job = server.cli("submit", "--vc", "lab", "--", "sh", "-c",
                     "echo $(hostname) $(wc -l < $VIRTUAI_HOSTFILE) $PWD", token=alice)  # fmt: skip
    server.cli("wait", job.strip(), "--timeout", "60", token=alice)
    logs = [server.cli("logs", job.strip(), "--task", str(i), token=alice) for i in range(2)]
    assert logs == ["lab-0 2 /shared\n", "lab-1 2 /shared\n"]

    # kill -9; while the server is down a node loses its network namespace.
    server.kill()
    runtime = VcRuntime(runtime_config)
    runtime_id = runtime.list_vcs()[0]
    subprocess.run(["ip", "netns", "del", runtime.names(runtime_id).netns(0)], check=True)
    server.start()
    vc = server.json("vc", "show", "lab", token=alice)
    assert vc["state"] == "running"
    assert vc["reason"].startswith("repaired:"), vc["reason"]
    assert [n["state"] for n in vc["nodes"]] == ["running", "running"]
    assert server.run("vc", "exec", "lab", "--", "hostname", token=alice).stdout == "lab-0\n"
    assert server.json("doctor")["leaked"] == []

    deleted = server.cli("vc", "delete", "lab", "--wait", token=alice)
    assert "(deleted:" in deleted
    assert runtime.objects_of(runtime_id) == []
    assert server.json("vc", "list", token=alice) == []
