"""Inside a node: its own processes, hostname, root file system (copy on write) and /shared."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from vc_helpers import MakeSpec, cpu_quota_us, sh, wait_until

from virtuai.errors import Conflict
from virtuai.host.users import unix_name
from virtuai.vcruntime import NodeSpec, NodeState, RuntimeConfig, VcRuntime, VcSpec

SRC = str(Path(__file__).resolve().parents[3] / "src")


def test_hostname_and_identity(runtime: VcRuntime, vc: VcSpec) -> None:
    for i in range(2):
        assert sh(runtime, vc.id, i, "hostname").strip() == vc.hostname(i)
        assert sh(runtime, vc.id, i, "cat /etc/hostname").strip() == vc.hostname(i)
    user = unix_name(vc.tenant, "vai-")
    uid = pwd.getpwnam(user).pw_uid
    ids = sh(runtime, vc.id, 0, "id -u; id -g; id -G").split()
    assert ids[0] == str(uid) and "0" not in ids  # the tenant's user, no root group
    assert sh(runtime, vc.id, 0, "id -u", user="root").strip() == "0"


def test_a_node_sees_only_its_own_processes(runtime: VcRuntime, vc: VcSpec) -> None:
    script = "for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done"
    listed = dict(line.split(maxsplit=1) for line in sh(runtime, vc.id, 0, script).splitlines())
    # its init (bwrap as pid 1 and the keep-alive as pid 2) and this command: nothing of the
    # host, nothing of node 1 (the /proc listing is taken before the loop forks anything)
    assert listed.pop("1") == "bwrap"
    assert listed.pop("2") == "sleep"
    assert list(listed.values()) == ["sh"], listed


def test_copy_on_write_roots_and_shared_volume(runtime: VcRuntime, vc: VcSpec) -> None:
    marker = f"/etc/virtuai-cow-{vc.id}"
    sh(runtime, vc.id, 0, f"echo node0 > {marker}; echo zero > /tmp/x", user="root")
    # written in node 0: not in node 1, not in the image (the host's own root)
    assert sh(runtime, vc.id, 0, f"cat {marker}").strip() == "node0"
    assert sh(runtime, vc.id, 1, f"test -e {marker} && echo yes || echo no").strip() == "no"
    assert not Path(marker).exists()
    assert sh(runtime, vc.id, 1, "ls -A /tmp").strip() == ""  # /tmp is each node's own
    # the change is in node 0's upper layer
    upper = runtime.paths(vc.id).node(0).upper
    assert (upper / marker.lstrip("/")).read_text() == "node0\n"
    # /shared is one directory for all nodes, writable by the tenant
    sh(runtime, vc.id, 0, "echo from-0 > /shared/hello")
    assert sh(runtime, vc.id, 1, "cat /shared/hello").strip() == "from-0"
    assert (runtime.paths(vc.id).shared / "hello").read_text() == "from-0\n"


def test_tenant_cannot_change_what_the_node_is(runtime: VcRuntime, vc: VcSpec) -> None:
    denied = runtime.run(vc.id, 0, ["sh", "-c", "echo x >> /etc/hosts"])
    assert denied.returncode != 0
    # the host's directories tenants should not browse are empty here
    for hidden in ("/root", "/home", "/tmp", "/var/tmp"):
        assert sh(runtime, vc.id, 0, f"ls -A {hidden}", user="root") == "", hidden
    # no setuid: the overlay root is mounted nosuid
    mounts = sh(runtime, vc.id, 0, "grep ' / / ' /proc/self/mountinfo")
    assert "nosuid" in mounts and "nodev" in mounts


def test_node_environment_and_hostfile(runtime: VcRuntime, make_spec: MakeSpec) -> None:
    spec = make_spec(2, nodes=(NodeSpec(1000, 256 * 2**20, (0,)), NodeSpec(500, 128 * 2**20)))
    runtime.create(spec)
    try:
        lines = sh(runtime, spec.id, 0, "env").splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        assert env["VIRTUAI_NODE_INDEX"] == "0" and env["HOSTNAME"] == spec.hostname(0)
        hostfile = sh(runtime, spec.id, 1, 'cat "$VIRTUAI_HOSTFILE"')
        assert hostfile.splitlines() == [f"{spec.hostname(i)} {spec.address(i)}" for i in range(2)]
        assert "CUDA_VISIBLE_DEVICES=''" in sh(runtime, spec.id, 1, "cat /etc/virtuai/node.env")
    finally:
        runtime.delete(spec.id)


def test_exec_streams_signals_and_exit_status(runtime: VcRuntime, vc: VcSpec) -> None:
    result = runtime.run(vc.id, 1, ["sh", "-c", "cat; echo err >&2; exit 3"], input=b"piped")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"piped", b"err\n")
    proc = runtime.exec(vc.id, 1, ["sh", "-c", "echo started; exec sleep 60"])
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM  # as if it were the command itself
    missing = runtime.run(vc.id, 1, ["no-such-program"])
    assert missing.returncode == 127 and b"no-such-program" in missing.stderr
    cwd = runtime.run(vc.id, 1, ["pwd"], cwd="/shared")
    assert cwd.stdout == b"/shared\n"


def test_commands_run_in_the_nodes_cgroup(runtime: VcRuntime, vc: VcSpec) -> None:
    proc = runtime.exec(vc.id, 0, ["sleep", "30"])
    try:
        key = runtime.names(vc.id).cgroup(0)
        wait_until(lambda: bool(runtime.cgroups.inner(key).task("exec").procs()))
        assert cpu_quota_us(runtime, vc.id, 0) == 50000  # 500 millicores
    finally:
        proc.kill()
        proc.wait()


def test_exec_into_a_dead_node_is_refused(runtime: VcRuntime, vc: VcSpec) -> None:
    record = runtime.init_record(vc.id, 1)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    wait_until(lambda: runtime.observe(vc.id).nodes[1].state == NodeState.DEAD)
    assert runtime.observe(vc.id).nodes[0].state == NodeState.RUNNING
    with pytest.raises(Conflict, match="not running"):
        runtime.run(vc.id, 1, ["true"])


def test_a_new_server_process_takes_the_nodes_back(
    runtime: VcRuntime, vc: VcSpec, config: RuntimeConfig
) -> None:
    """Everything ``exec`` and ``observe`` need is on disk: no state of the creating process."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from virtuai.vcruntime import RuntimeConfig, VcRuntime
        rt = VcRuntime(RuntimeConfig(state_dir=Path({str(config.state_dir)!r}),
                                     prefix={config.prefix!r},
                                     cgroup_parent={config.cgroup_parent!r}))
        print(rt.observe({vc.id!r}).running)
        print(rt.run({vc.id!r}, 1, ["hostname"]).stdout.decode().strip())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": SRC, "PATH": os.environ.get("PATH", "")},
    )
    assert out.stdout.split() == ["True", vc.hostname(1)], out.stderr
