"""Bringing nodes up and down: the per-step half of create, resume and repair.

``NodeBuilder`` does the work in batches (one ``ip -batch`` for all links, one
nft transaction, all inits spawned before any is waited for) and registers an
undo action *before* each step that can half-succeed, so that ``Undo.rollback``
leaves nothing behind.  It keeps the time of each step (``timings``) for the
benchmark, and calls an optional fault hook at named points (tests).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from virtuai.host.cgroups import Limits
from virtuai.host.devices import gpu_devices
from virtuai.host.processes import create_time
from virtuai.vcruntime import firewall, network, nodes, storage, system
from virtuai.vcruntime.config import RuntimeConfig
from virtuai.vcruntime.images import Image
from virtuai.vcruntime.naming import Names
from virtuai.vcruntime.nodes import InitRecord, Launch, NodeCgroups
from virtuai.vcruntime.spec import VcSpec, env_file, hostfile, hosts_file, node_env

log = logging.getLogger(__name__)

FaultHook = Callable[[str], None]


@dataclass(slots=True)
class Ctx:
    """One cluster being built or repaired: the spec and what it resolves to."""

    spec: VcSpec
    names: Names
    paths: storage.VcPaths
    image: Image
    keepalive: str
    uid: int
    gid: int


@dataclass(slots=True)
class Undo:
    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], None]) -> None:
        self.steps.append((what, action))

    def rollback(self) -> list[str]:
        """Run the undo actions, last first; returns the ones that failed."""
        errors = []
        for what, action in reversed(self.steps):
            try:
                action()
            except Exception as exc:  # keep undoing the rest
                errors.append(f"{what}: {exc}")
                log.exception("rollback step failed: %s", what)
        self.steps.clear()
        return errors


class NodeBuilder:
    def __init__(
        self, config: RuntimeConfig, cgroups: NodeCgroups, fault: FaultHook | None
    ) -> None:
        self.config = config
        self.cgroups = cgroups
        self.fault = fault
        # bwrap monitors started by this process, reaped when their node stops
        self.monitors: dict[int, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}  # seconds per step of the last build
        self._mark_at = time.monotonic()

    def start_timing(self) -> None:
        self.timings = {}
        self._mark_at = time.monotonic()

    def vc_up(self, ctx: Ctx, undo: Undo) -> None:
        spec, names = ctx.spec, ctx.names
        storage.prepare_vc_dirs(ctx.paths, ctx.uid, ctx.gid)
        storage.write_vc_files(ctx.paths, hosts_file(spec), hostfile(spec))
        self.mark("vc dirs")
        self.step("bridge")
        undo.push(f"deleting bridge {names.bridge}", lambda: network.delete_bridge(names.bridge))
        network.ensure_bridge(spec, names)
        self.mark("bridge")
        undo.push("removing firewall rules", lambda: firewall.remove_vc([names.bridge]))
        firewall.apply_vc(names.bridge, spec.gateway)
        if spec.gateway and network.enable_ip_forward():
            log.warning("turned on IPv4 forwarding (net.ipv4.ip_forward=1) for gateway clusters")
        self.mark("firewall")

    def nodes_up(self, ctx: Ctx, indexes: Sequence[int], undo: Undo) -> None:
        spec, names, paths = ctx.spec, ctx.names, ctx.paths

        def prepare(i: int) -> None:
            node = paths.node(i)
            storage.prepare_node_dirs(node, ctx.image)
            storage.write_node_files(node, spec.hostname(i), env_file(node_env(spec, i)))

        self.parallel(prepare, indexes)  # file system latency, not CPU: threads overlap it
        self.mark("node dirs")
        for i in indexes:
            key = names.cgroup(i)
            undo.push(f"removing cgroup {key}", partial(self.cgroups.remove, key))
            self.cgroups.create(key, self.limits(spec, i))
        self.mark("cgroups")
        self.step("links")
        veths, netns = [names.veth(i) for i in indexes], [names.netns(i) for i in indexes]
        undo.push("deleting netns and veths", lambda: network.delete_nodes(veths, netns))
        network.create_node_links(names, indexes)
        self.mark("netns+veths")
        self.parallel(lambda i: network.configure_node_netns(spec, names, i), indexes)
        self.mark("addresses")
        mounted = {p for p, t in system.mount_table() if t == "overlay"}
        for i in indexes:
            node = paths.node(i)
            undo.push(f"unmounting {node.merged}", partial(storage.unmount_overlay, node))
            storage.mount_overlay(ctx.image.lower, node, mounted)
        self.mark("overlays")
        records: dict[int, InitRecord] = {}
        undo.push("stopping node inits", lambda: self.kill_inits(records.values()))
        self.start_nodes(ctx, indexes, records)
        self.mark("inits")
        for i in indexes:  # no fsync: after a power cut there is no init to record anyway
            system.write_file(paths.node(i).init_record, json.dumps(records[i].to_json()), 0o600)

    def start_nodes(self, ctx: Ctx, indexes: Sequence[int], records: dict[int, InitRecord]) -> None:
        """Spawn every node's init, then wait for all of them at once; fills ``records``
        with those that run (for the undo) and raises the first failure."""
        spec, paths = ctx.spec, ctx.paths
        errors: list[BaseException] = []
        starting: dict[int, nodes.Starting] = {}
        for i in indexes:
            node = paths.node(i)
            launch = Launch(
                hostname=spec.hostname(i),
                netns=ctx.names.netns(i),
                merged=node.merged,
                shared=paths.shared,
                binds=(
                    (paths.hosts, "/etc/hosts"),
                    (node.hostname, "/etc/hostname"),
                    (paths.hostfile, "/etc/virtuai/hostfile"),
                    (node.env, "/etc/virtuai/node.env"),
                ),
                devices=gpu_devices(spec.nodes[i].gpu_indices),
                keepalive=ctx.keepalive,
                cgroup_procs=tuple(self.cgroups.procs_files(ctx.names.cgroup(i), nodes.INIT_LEAF)),
                log=node.init_log,
            )
            try:
                self.step(f"start:{i}")
                starting[i] = nodes.spawn_init(launch)
            except Exception as exc:
                errors.append(exc)
        results = nodes.finish_inits(list(starting.values()))
        for i, result in zip(starting, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            pid, ticks, monitor = result
            self.monitors[monitor.pid] = monitor
            records[i] = InitRecord(
                pid=pid,
                start_ticks=ticks,
                create_time=create_time(pid) or 0.0,
                monitor_pid=monitor.pid,
                started_at=time.time(),
                limits=self.limit_dict(spec, i),
                gpu_indices=spec.nodes[i].gpu_indices,
            )
        if errors:
            raise errors[0]

    def limits(self, spec: VcSpec, i: int) -> Limits:
        node = spec.nodes[i]
        return Limits(node.cpu_milli, node.memory, self.config.node_pids_max)

    def parallel(self, action: Callable[[int], None], indexes: Sequence[int]) -> None:
        """Run ``action`` for every index; all run to the end, then the first error is raised."""
        if len(indexes) <= 1:
            for i in indexes:
                action(i)
            return
        with ThreadPoolExecutor(max_workers=min(self.config.workers, len(indexes))) as pool:
            futures = [pool.submit(action, i) for i in indexes]
        for future in futures:
            if (exc := future.exception()) is not None:
                raise exc

    def mark(self, finished: str) -> None:
        """Add the time since the previous mark to ``timings[finished]``."""
        now = time.monotonic()
        self.timings[finished] = self.timings.get(finished, 0.0) + now - self._mark_at
        self._mark_at = now

    def step(self, name: str) -> None:
        if self.fault is not None:
            self.fault(name)

    def kill_inits(self, records: Iterable[InitRecord]) -> None:
        records = list(records)
        for record in records:
            nodes.kill_init(record)
        for record in records:
            monitor = self.monitors.pop(record.monitor_pid, None)
            if monitor is not None:
                try:
                    monitor.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    monitor.kill()

    def limit_dict(self, spec: VcSpec, i: int) -> dict[str, int]:
        limits = self.limits(spec, i)
        return {"cpu_milli": limits.cpu_milli, "memory": limits.memory, "pids": limits.pids}

    def teardown_nodes(
        self,
        names: Names,
        paths: storage.VcPaths,
        indexes: Sequence[int],
        records: Iterable[InitRecord],
    ) -> None:
        """Remove what is left of some nodes (their init, cgroup, mount, links)."""
        self.kill_inits(records)
        for i in indexes:
            if self.cgroups.exists(names.cgroup(i)):
                self.cgroups.remove(names.cgroup(i))
            storage.unmount_overlay(paths.node(i))
        network.delete_nodes([names.veth(i) for i in indexes], [names.netns(i) for i in indexes])
        for i in indexes:
            paths.node(i).init_record.unlink(missing_ok=True)
