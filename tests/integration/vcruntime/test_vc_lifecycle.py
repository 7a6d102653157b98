"""create / suspend / resume (remap) / delete / reconcile / doctor, against the real kernel."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
from pathlib import Path

import pytest
from vc_helpers import (
    MakeSpec,
    connect,
    cpu_quota_us,
    echo_server,
    host_ip_netns_exists,
    memory_limit,
    sh,
    wait_until,
)

from virtuai.errors import ConfigurationError, Conflict, DriverError
from virtuai.vcruntime import (
    DesiredState,
    Kind,
    NodeSpec,
    NodeState,
    RuntimeConfig,
    VcRuntime,
    VcSpec,
    host,
)
from virtuai.vcruntime.runtime import VcRuntime as Runtime


def assert_nothing_left(runtime: VcRuntime, spec: VcSpec) -> None:
    """No netns, bridge, veth, mount, cgroup, nft chain or directory of ``spec`` exists."""
    left = runtime.objects_of(spec.id)
    assert not left, [o.describe() for o in left]
    names = runtime.names(spec.id)
    # the same, looked up independently of the inventory code
    for i in range(len(spec.nodes)):
        assert not host_ip_netns_exists(names.netns(i))
        assert not Path(f"/sys/class/net/{names.veth(i)}").exists()
        for d in runtime.cgroups.node(names.cgroup(i)).dirs():
            assert not d.exists(), d
    assert not Path(f"/sys/class/net/{names.bridge}").exists()
    nft = subprocess.run(
        ["nft", "list", "table", "inet", "virtuai"], capture_output=True, text=True, check=False
    ).stdout
    assert names.bridge not in nft
    assert str(runtime.paths(spec.id).dir) not in Path("/proc/self/mountinfo").read_text()
    assert not runtime.paths(spec.id).dir.exists()


def test_create_is_fast_idempotent_and_delete_leaves_nothing(
    runtime: VcRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(3, gateway=True)
    status = runtime.create(spec)
    assert status.running and [n.hostname for n in status.nodes] == [
        spec.hostname(i) for i in range(3)
    ]
    first = [n.pid for n in status.nodes]
    again = runtime.create(spec)  # the same request again: nothing changes
    assert [n.pid for n in again.nodes] == first
    with pytest.raises(Conflict, match="another spec"):
        runtime.create(dataclasses.replace(spec, gateway=False))
    kinds = {o.kind for o in runtime.objects_of(spec.id)}
    assert kinds == set(Kind), kinds  # one of each kind exists while it runs
    runtime.delete(spec.id)
    assert_nothing_left(runtime, spec)
    assert runtime.observe(spec.id).desired is None
    runtime.delete(spec.id)  # deleting twice is fine


def test_suspend_keeps_files_and_frees_everything_then_resume_remaps(
    runtime: VcRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(2, nodes=(NodeSpec(500, 256 * 2**20, (0,)), NodeSpec(250, 128 * 2**20)))
    runtime.create(spec)
    sh(runtime, spec.id, 0, "echo before > /var/tmp/state; echo shared > /shared/s")
    sh(runtime, spec.id, 1, "echo root-fs > /etc/node1-file", user="root")
    long_running = runtime.exec(spec.id, 0, ["sleep", "300"])

    runtime.suspend(spec.id, grace_s=2)
    assert long_running.wait(timeout=10) != 0  # the node's processes are gone
    assert runtime.observe(spec.id).desired == DesiredState.SUSPENDED
    assert all(n.state == NodeState.STOPPED for n in runtime.observe(spec.id).nodes)
    kernel = [o.describe() for o in runtime.objects_of(spec.id) if o.kind != Kind.DIR]
    assert kernel == []  # no netns, veth, bridge, mount, cgroup, nft chain held
    runtime.suspend(spec.id)  # idempotent

    remapped = dataclasses.replace(
        spec,
        nodes=(NodeSpec(1500, 512 * 2**20, (2, 3)), NodeSpec(250, 128 * 2**20, (1,))),
    )
    status = runtime.resume(remapped)
    assert status.running
    assert sh(runtime, spec.id, 0, "cat /var/tmp/state /shared/s") == "before\nshared\n"
    assert sh(runtime, spec.id, 1, "cat /etc/node1-file") == "root-fs\n"
    # the new placement: in the cgroup and in the environment
    assert cpu_quota_us(runtime, spec.id, 0) == 150000
    assert memory_limit(runtime, spec.id, 0) == 512 * 2**20
    assert sh(runtime, spec.id, 0, "echo $CUDA_VISIBLE_DEVICES").strip() == "2,3"
    assert sh(runtime, spec.id, 1, "echo $CUDA_VISIBLE_DEVICES").strip() == "1"
    assert runtime.resume(remapped).running  # idempotent while running
    with pytest.raises(Conflict, match="node count"):
        runtime.suspend(spec.id)
        runtime.resume(make_spec(3, id=spec.id, name=spec.name))
    runtime.delete(spec.id)
    assert_nothing_left(runtime, spec)


def test_a_failure_half_way_rolls_everything_back(
    config: RuntimeConfig, runtime: VcRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(4)

    def fault(step: str) -> None:
        if step == "start:3":
            raise RuntimeError("injected failure while starting node 3")

    faulty = Runtime(config, fault=fault)
    with pytest.raises(DriverError, match=r"injected failure .* node 3; rolled back"):
        faulty.create(spec)
    assert_nothing_left(runtime, spec)

    # a spec the kernel refuses for node 3 of 4 (a CPU quota beyond what cgroups accept)
    bogus = make_spec(4)
    nodes = list(bogus.nodes)
    nodes[3] = NodeSpec(cpu_milli=10**15)
    bogus = dataclasses.replace(bogus, nodes=tuple(nodes))
    with pytest.raises(DriverError, match="cgroup") as failure:
        runtime.create(bogus)
    assert "rolled back" in failure.value.message
    assert_nothing_left(runtime, bogus)


def test_resume_failure_keeps_the_suspended_cluster(
    config: RuntimeConfig, runtime: VcRuntime, make_spec: MakeSpec
) -> None:
    spec = make_spec(2)
    runtime.create(spec)
    sh(runtime, spec.id, 1, "echo kept > /shared/k; echo mine > /var/tmp/m")
    runtime.suspend(spec.id)

    def fault(step: str) -> None:
        if step == "start:1":
            raise RuntimeError("no luck")

    with pytest.raises(DriverError, match=r"resuming .* rolled back"):
        Runtime(config, fault=fault).resume(spec)
    assert runtime.observe(spec.id).desired == DesiredState.SUSPENDED
    assert [o.kind for o in runtime.objects_of(spec.id)] == [Kind.DIR]
    runtime.resume(spec)
    assert sh(runtime, spec.id, 1, "cat /shared/k /var/tmp/m") == "kept\nmine\n"
    runtime.delete(spec.id)


def test_reconcile_after_kernel_objects_are_lost(runtime: VcRuntime, make_spec: MakeSpec) -> None:
    spec = make_spec(3)
    runtime.create(spec)
    sh(runtime, spec.id, 2, "echo survived > /var/tmp/f")
    names, paths = runtime.names(spec.id), runtime.paths(spec.id)
    node1_pid = runtime.observe(spec.id).nodes[1].pid
    # by hand: a netns loses its name, an overlay is unmounted, an init is killed, rules flushed
    subprocess.run(["ip", "netns", "delete", names.netns(1)], check=True)
    subprocess.run(["umount", str(paths.node(2).merged)], check=True)
    record = runtime.init_record(spec.id, 0)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    subprocess.run(["nft", "flush", "chain", "inet", "virtuai", f"{names.bridge}-from"], check=True)
    wait_until(lambda: runtime.observe(spec.id).nodes[0].state == NodeState.DEAD)
    status = runtime.observe(spec.id)
    assert status.nodes[1].state == NodeState.DEGRADED
    assert status.nodes[2].state == NodeState.DEGRADED

    report = runtime.reconcile(spec, DesiredState.RUNNING)
    text = "\n".join(report.actions)
    assert f"restarted {spec.hostname(0)}: its init was gone" in text
    assert f"gave {spec.hostname(1)}'s netns its name back" in text
    assert f"restarted {spec.hostname(2)}" in text and "not mounted" in text
    assert "rewrote the firewall rules" in text
    status = runtime.observe(spec.id)
    assert status.running, status
    assert status.nodes[1].pid == node1_pid  # repaired in place, not restarted
    assert sh(runtime, spec.id, 2, "cat /var/tmp/f") == "survived\n"
    with echo_server(runtime, spec.id, 0, 7010):
        assert connect(runtime, spec.id, 2, spec.hostname(0), 7010) == "echo:hi"
    assert runtime.reconcile(spec, DesiredState.RUNNING).actions == ()  # nothing left to do

    # after a "reboot" nothing of the kernel state is left: all nodes come back
    runtime.remove_objects(o for o in runtime.objects_of(spec.id) if o.kind != Kind.DIR)
    assert not runtime.observe(spec.id).running
    report = runtime.reconcile(spec, DesiredState.RUNNING)
    assert runtime.observe(spec.id).running, report
    assert sh(runtime, spec.id, 2, "cat /var/tmp/f") == "survived\n"

    assert runtime.reconcile(spec, DesiredState.SUSPENDED).actions
    assert [o.kind for o in runtime.objects_of(spec.id)] == [Kind.DIR]
    assert runtime.reconcile(spec, DesiredState.DELETED).actions == ("deleted",)
    assert_nothing_left(runtime, spec)


def test_doctor_finds_and_removes_leaked_objects(runtime: VcRuntime, make_spec: MakeSpec) -> None:
    kept, lost = make_spec(1), make_spec(2)
    runtime.create(kept)
    runtime.create(lost)
    # the platform forgets ``lost`` (e.g. its database row was deleted by hand)
    leaked = runtime.leaked_objects(known_vcs=[kept.id, *other_runs_vcs(runtime, kept, lost)])
    owners = {o.tag or o.vc_id for o in leaked}
    assert owners == {runtime.names(lost.id).tag, lost.id}
    assert {o.kind for o in leaked} == set(Kind)
    assert runtime.remove_leaked(leaked) == []
    assert_nothing_left(runtime, lost)
    assert runtime.observe(kept.id).running
    runtime.delete(kept.id)


def other_runs_vcs(runtime: VcRuntime, *mine: VcSpec) -> list[str]:
    """Clusters other tests of this session still hold (none, when run alone)."""
    return [v for v in runtime.list_vcs() if v not in {s.id for s in mine}]


def test_preconditions_fail_at_once_and_build_nothing(
    config: RuntimeConfig,
    runtime: VcRuntime,
    make_spec: MakeSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = make_spec(2)
    monkeypatch.setattr(host, "probe_overlay", lambda state_dir: "overlayfs is not available")
    monkeypatch.setattr(host, "probe_netns", lambda: "this kernel has no network namespaces")
    with pytest.raises(ConfigurationError, match="overlayfs is not available") as failure:
        Runtime(config).create(spec)
    assert "network namespaces" in failure.value.message or "overlayfs" in failure.value.message
    assert_nothing_left(runtime, spec)


def test_not_root_fails_with_a_clear_message(
    config: RuntimeConfig, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(1)
    state = config.state_dir / "never-made"
    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # what an unprivileged server sees
    with pytest.raises(ConfigurationError, match="need root"):
        Runtime(dataclasses.replace(config, state_dir=state)).create(spec)
    monkeypatch.undo()
    assert not state.exists()
