"""``VcRuntime``: the lifecycle of virtual clusters on this machine.

The platform's control loop calls it; it keeps no state in memory that
matters (a new process picks up from the state directory and the kernel).
Every operation takes the cluster's lock, is idempotent, and either
completes or undoes what it did (``build.Undo``) and raises a ``DriverError``
that says which step failed and why.

Build order (``create``/``resume``; undone in reverse on failure; see build.py)::

    directories and generated files -> bridge -> nft rules -> node cgroups
    -> netns + veths (one ip -batch) -> addresses inside each netns (in parallel)
    -> overlays -> node inits (all spawned, then waited for) -> init.json records

``suspend`` and ``delete`` tear down *everything found* of the cluster (the
inventory, not only what the records say), so they also clean after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any

from virtuai.errors import ConfigurationError, Conflict, DriverError, InvalidRequest, NotFound
from virtuai.host.files import read_json, write_json_atomic
from virtuai.host.sandbox import JobImage, VirtualNode
from virtuai.host.users import ensure_tenant_user
from virtuai.vcruntime import firewall, host, inventory, network, nodes, ports, storage, system
from virtuai.vcruntime.build import Ctx, FaultHook, NodeBuilder, Undo
from virtuai.vcruntime.config import RuntimeConfig
from virtuai.vcruntime.images import HOST, ImageStore, find_keepalive, host_root_problem
from virtuai.vcruntime.inventory import KernelObject, Kind
from virtuai.vcruntime.locks import remove_lock, vc_lock
from virtuai.vcruntime.naming import Names, validate_prefix, validate_vc_id, vc_tag
from virtuai.vcruntime.nodes import InitRecord, NodeCgroups
from virtuai.vcruntime.spec import (
    DesiredState,
    NodeState,
    NodeStatus,
    ReconcileReport,
    VcSpec,
    VcStatus,
    hostfile,
    hosts_file,
    node_env,
)
from virtuai.vcruntime.vnode import VnodeRef

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class VcRuntime:
    def __init__(self, config: RuntimeConfig, *, fault: FaultHook | None = None) -> None:
        validate_prefix(config.prefix)
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.images = ImageStore(self.state_dir)
        self._fault = fault  # tests: raise at a named step to exercise rollback
        self._cgroups: NodeCgroups | None = None
        self._builder: NodeBuilder | None = None

    # -- preconditions -------------------------------------------------------------------

    def check_host(self) -> None:
        """``ConfigurationError`` listing why this machine cannot run clusters (cached once OK)."""
        if self._builder is not None:
            return
        layout, problems = host.problems(self.state_dir, self.config.cgroup_parent)
        if problems or layout is None:
            raise ConfigurationError("cannot run virtual clusters here: " + "; ".join(problems))
        self._cgroups = NodeCgroups(layout)
        self._builder = NodeBuilder(self.config, self._cgroups, self._fault)

    def host_networks(self) -> list[IPv4Network]:
        """Networks the host already routes (our live clusters', leftovers of dead ones,
        Docker's, a VPN's...): a new cluster's subnet must avoid them all."""
        return network.routed_networks()

    @property
    def cgroups(self) -> NodeCgroups:
        return self.builder.cgroups

    @property
    def builder(self) -> NodeBuilder:
        if self._builder is None:
            self.check_host()
        assert self._builder is not None
        return self._builder

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent in each step of the last create/resume (for benchmarks)."""
        return dict(self._builder.timings) if self._builder is not None else {}

    # -- records -------------------------------------------------------------------------

    def paths(self, vc_id: str) -> storage.VcPaths:
        return storage.vc_paths(self.state_dir, validate_vc_id(vc_id))

    def names(self, vc_id: str) -> Names:
        return Names.of(self.config.prefix, vc_id)

    def record(self, vc_id: str) -> tuple[VcSpec, DesiredState] | None:
        data = read_json(self.paths(vc_id).record)
        if data is None:
            return None
        return VcSpec.from_json(data["spec"]), DesiredState(data["desired"])

    def _write_record(self, spec: VcSpec, desired: DesiredState) -> None:
        data = {"spec": spec.to_json(), "desired": desired.value, "updated_at": time.time()}
        write_json_atomic(self.paths(spec.id).record, data)

    def list_vcs(self) -> list[str]:
        root = storage.vcs_root(self.state_dir)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "vc.json").is_file())

    def init_record(self, vc_id: str, index: int) -> InitRecord | None:
        data = read_json(self.paths(vc_id).node(index).init_record)
        return InitRecord.from_json(data) if data else None

    def _lock(self, vc_id: str) -> AbstractContextManager[Path]:
        return vc_lock(self.state_dir / "locks", validate_vc_id(vc_id))

    # -- lifecycle -----------------------------------------------------------------------

    def create(self, spec: VcSpec) -> VcStatus:
        """Build a new cluster and start its nodes; the same call again changes nothing."""
        spec.validate()
        self.check_host()
        with self._lock(spec.id):
            existing = self.record(spec.id)
            if existing is not None:
                recorded, desired = existing
                if recorded != spec:
                    raise Conflict(
                        f"virtual cluster {spec.id} exists with another spec", field="id"
                    )
                if desired != DesiredState.RUNNING:
                    raise Conflict(
                        f"virtual cluster {spec.id} is {desired.value}; resume it", field="id"
                    )
                self._repair(spec, [])
            else:
                self._build(spec, fresh=True)
        return self.observe(spec.id)

    def resume(self, spec: VcSpec) -> VcStatus:
        """Start a suspended cluster again, possibly with another placement (remap)."""
        spec.validate()
        self.check_host()
        with self._lock(spec.id):
            existing = self.record(spec.id)
            if existing is None:
                raise NotFound(f"virtual cluster {spec.id} does not exist", field="id")
            recorded, desired = existing
            _check_resumable(recorded, spec)
            if desired == DesiredState.RUNNING:
                if recorded != spec:
                    raise Conflict(
                        f"virtual cluster {spec.id} is running; suspend it before remapping",
                        field="id",
                    )
                self._repair(spec, [])
            else:
                self._build(spec, fresh=False)
        return self.observe(spec.id)

    def suspend(self, vc_id: str, grace_s: float = 0.0) -> None:
        """Stop every node and free every kernel object; upper layers and /shared stay."""
        self.check_host()
        with self._lock(vc_id):
            existing = self.record(vc_id)
            if existing is None:
                raise NotFound(f"virtual cluster {vc_id} does not exist", field="id")
            self._teardown(vc_id, grace_s)
            self._write_record(existing[0], DesiredState.SUSPENDED)

    def delete(self, vc_id: str, grace_s: float = 0.0) -> None:
        """Remove the cluster entirely, disk included; deleting a missing one is a no-op."""
        self.check_host()
        with self._lock(vc_id):
            self._delete_locked(vc_id, grace_s)
            remove_lock(self.state_dir / "locks", vc_id)

    def _delete_locked(self, vc_id: str, grace_s: float) -> None:
        self._teardown(vc_id, grace_s)
        storage.remove_tree(self.paths(vc_id).dir)

    def reconcile(self, spec: VcSpec, desired: DesiredState) -> ReconcileReport:
        """Bring the kernel back to the recorded desired state (after a crash or lost objects)."""
        spec.validate()
        self.check_host()
        actions: list[str] = []
        with self._lock(spec.id):
            existing = self.record(spec.id)
            if desired == DesiredState.DELETED:
                if existing is not None or self.objects_of(spec.id):
                    self._delete_locked(spec.id, 0.0)
                    actions.append("deleted")
                remove_lock(self.state_dir / "locks", spec.id)
            elif desired == DesiredState.SUSPENDED:
                kernel = [o for o in self.objects_of(spec.id) if o.kind != Kind.DIR]
                if kernel:
                    self._teardown(spec.id, 0.0)
                    actions.append(f"stopped: removed {len(kernel)} kernel objects")
                if existing is not None and existing[1] != DesiredState.SUSPENDED:
                    self._write_record(spec, DesiredState.SUSPENDED)
            elif existing is None:
                self._build(spec, fresh=True)
                actions.append("created (no record of it was found)")
            else:
                _check_resumable(existing[0], spec)
                if existing != (spec, DesiredState.RUNNING):
                    self._write_record(spec, DesiredState.RUNNING)
                self._repair(spec, actions)
        return ReconcileReport(tuple(actions))

    # -- observing -----------------------------------------------------------------------

    def observe(self, vc_id: str) -> VcStatus:
        existing = self.record(vc_id)
        if existing is None:
            return VcStatus(vc_id, None, ())
        spec, desired = existing
        names = self.names(vc_id)
        objects = self.objects_of(vc_id)
        present = {(o.kind, o.name) for o in objects}
        nft_ok = firewall.vc_rules_present(names.bridge, spec.gateway, firewall.state())
        bridge_ok = (Kind.BRIDGE, names.bridge) in present
        links = network.links()
        statuses = []
        for i in range(len(spec.nodes)):
            record = self.init_record(vc_id, i)
            alive = record is not None and record.alive()
            problems: list[str] = []
            if alive:
                assert record is not None
                problems = self._node_problems(spec, names, i, record, present, links)
                if not bridge_ok:
                    problems.append(f"bridge {names.bridge} is missing")
                if not nft_ok:
                    problems.append("firewall rules are missing or changed")
            if desired == DesiredState.RUNNING:
                state = (
                    (NodeState.DEGRADED if problems else NodeState.RUNNING)
                    if alive
                    else NodeState.DEAD
                )
            else:
                state = NodeState.DEGRADED if alive else NodeState.STOPPED
                if alive:
                    problems.append(f"running although the cluster is {desired.value}")
            statuses.append(
                NodeStatus(
                    i,
                    spec.hostname(i),
                    str(spec.address(i)),
                    state,
                    record.pid if alive and record else None,
                    tuple(problems),
                )
            )
        return VcStatus(vc_id, desired, tuple(statuses))

    def _node_problems(
        self,
        spec: VcSpec,
        names: Names,
        i: int,
        record: InitRecord,
        present: set[tuple[Kind, str]],
        links: Mapping[str, network.Link],
    ) -> list[str]:
        problems = []
        ns = names.netns(i)
        if network.netns_inode(ns) is None:
            problems.append(f"netns {ns} has lost its name")
        elif network.netns_inode(ns) != network.process_netns_inode(record.pid):
            problems.append(f"netns {ns} is not the node's")
        veth = links.get(names.veth(i))
        if veth is None:
            problems.append(f"veth {names.veth(i)} is missing")
        elif veth.master != names.bridge:
            problems.append(f"veth {names.veth(i)} is not on the bridge")
        merged = str(self.paths(spec.id).node(i).merged)
        if (Kind.MOUNT, merged) not in present:
            problems.append(f"the overlay {merged} is not mounted")
        if (Kind.CGROUP, names.cgroup(i)) not in present:
            problems.append(f"cgroup {names.cgroup(i)} is missing")
        return problems

    # -- running commands in nodes ---------------------------------------------------------

    def exec(
        self,
        vc_id: str,
        index: int,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
        tty: bool = False,
    ) -> nodes.NodeProcess:
        """Start ``argv`` in node ``index`` as the tenant's user (``user="root"`` for setup).

        With ``tty`` the caller passes a pseudo-terminal's slave as ``stdin`` (and
        usually ``stdout``/``stderr``): it becomes the command's controlling terminal.

        Returns a ``Popen`` (``NodeProcess``) whose signals reach the command
        and whose exit status is the command's; the command dies with it.  It
        runs in the node's namespaces and in its cgroup (``exec`` leaf), with
        the node's environment (``VIRTUAI_*``, ``CUDA_VISIBLE_DEVICES``) plus ``env``.
        """
        self.check_host()
        spec, record = self._running_node(vc_id, index)
        uid, gid, name = self._exec_user(spec, user)
        groups = [0] if uid == 0 else os.getgrouplist(name, gid)
        base = {
            "PATH": system.BASE_PATH,
            "HOME": cwd if uid else "/root",
            "USER": name,
            "LOGNAME": name,
            "LANG": "C.UTF-8",
        }
        full_env = {**base, **node_env(spec, index), **(env or {})}
        procs = self.cgroups.procs_files(self.names(vc_id).cgroup(index), nodes.EXEC_LEAF)
        return nodes.spawn_in_node(
            record, procs, argv, uid=uid, gid=gid, groups=groups, cwd=cwd, env=full_env,
            stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
        )  # fmt: skip

    def run(
        self,
        vc_id: str,
        index: int,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        input: bytes | None = None,
        timeout: float | None = 60.0,
    ) -> ExecResult:
        """``exec`` and wait: the exit status and both streams."""
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        proc = self.exec(vc_id, index, argv, user=user, env=env, cwd=cwd, stdin=stdin)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise DriverError(
                f"command {argv[0]} in node {index} did not finish in {timeout}s"
            ) from None
        return ExecResult(proc.returncode, out, err)

    def vnode(self, vc_id: str, index: int) -> VnodeRef:
        """Where the local driver's supervisor launches a task inside node ``index``."""
        spec, record = self._running_node(vc_id, index)
        key = self.names(vc_id).cgroup(index)
        node = VirtualNode(
            vc=vc_id,
            index=index,
            hostname=spec.hostname(index),
            init_pid=record.pid,
            init_create_time=record.create_time,
            cgroup=self.cgroups.inner(key).to_json(),
        )
        return VnodeRef(node, node_env(spec, index))

    def job_image(self, name: str) -> JobImage:
        """Image ``name`` as a job's sandbox uses it (``submit --image``); ``NotFound`` if none."""
        image = self.images.get(name)
        keepalive = find_keepalive(image.lower)
        if keepalive is None:
            raise InvalidRequest(f"image {name} has no sleep program", field="image")
        return JobImage(name=image.name, root=str(image.lower), keepalive=keepalive)

    def connect(self, vc_id: str, index: int, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection to ``port`` inside node ``index`` (``ports.connect_in_node``)."""
        spec, record = self._running_node(vc_id, index)
        addresses = ["127.0.0.1", str(spec.address(index))]
        return ports.connect_in_node(record, spec.hostname(index), addresses, port, timeout)

    def _running_node(self, vc_id: str, index: int) -> tuple[VcSpec, InitRecord]:
        existing = self.record(vc_id)
        if existing is None:
            raise NotFound(f"virtual cluster {vc_id} does not exist", field="vc")
        spec = existing[0]
        if not 0 <= index < len(spec.nodes):
            raise InvalidRequest(f"virtual cluster {vc_id} has no node {index}", field="index")
        record = self.init_record(vc_id, index)
        if record is None or not record.alive():
            raise Conflict(f"node {spec.hostname(index)} is not running", field="index")
        return spec, record

    def _exec_user(self, spec: VcSpec, user: str | None) -> tuple[int, int, str]:
        if user == "root":
            return 0, 0, "root"
        if user is None:
            return self._tenant_user(spec)
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise NotFound(f"no Unix user {user} on this host", field="user") from None
        return account.pw_uid, account.pw_gid, account.pw_name

    def _tenant_user(self, spec: VcSpec) -> tuple[int, int, str]:
        if spec.user is None:
            return ensure_tenant_user(spec.tenant, self.config.user_prefix)
        try:
            account = pwd.getpwnam(spec.user)
        except KeyError:
            raise NotFound(f"no Unix user {spec.user} on this host", field="user") from None
        if account.pw_uid == 0 or account.pw_gid == 0:
            raise InvalidRequest(f"user {spec.user} has root's uid or gid", field="user")
        return account.pw_uid, account.pw_gid, account.pw_name

    # -- building --------------------------------------------------------------------------

    def _context(self, spec: VcSpec) -> Ctx:
        image = self.images.get(spec.image)
        if image.name == HOST:
            if (problem := host_root_problem()) is not None:
                raise ConfigurationError(f"the host image cannot be used: {problem}")
            keepalive = find_keepalive(Path("/"))
        else:
            self.images.protect(image.name)
            keepalive = find_keepalive(image.lower)
        if keepalive is None:
            raise ConfigurationError(f"image {image.name} has no sleep program for the nodes' init")
        uid, gid, _ = self._tenant_user(spec)
        return Ctx(spec, self.names(spec.id), self.paths(spec.id), image, keepalive, uid, gid)

    def _build(self, spec: VcSpec, *, fresh: bool) -> None:
        """Everything of a cluster, or nothing: on failure all of it is undone."""
        builder = self.builder
        started = time.monotonic()
        builder.start_timing()
        ctx = self._context(spec)
        network.check_subnet_free(spec, ctx.names)
        builder.mark("checks")
        self._teardown(spec.id, 0.0, keep_dirs=True)  # leftovers of a crashed attempt, if any
        builder.mark("leftovers")
        undo = Undo()
        try:
            if fresh:
                undo.push(
                    "removing the cluster's directory", lambda: storage.remove_tree(ctx.paths.dir)
                )
            builder.vc_up(ctx, undo)
            if fresh:
                self._write_record(spec, DesiredState.RUNNING)
            builder.nodes_up(ctx, range(len(spec.nodes)), undo)
            self._write_record(spec, DesiredState.RUNNING)
            builder.mark("records")
        except BaseException as exc:
            errors = undo.rollback()
            if not isinstance(exc, Exception):
                raise
            if (
                isinstance(exc, (ConfigurationError, Conflict, NotFound, InvalidRequest))
                and not errors
            ):
                raise
            detail = f"; rollback incomplete: {'; '.join(errors)}" if errors else "; rolled back"
            what = "creating" if fresh else "resuming"
            raise DriverError(f"{what} virtual cluster {spec.name} failed: {exc}{detail}") from exc
        log.info(
            "virtual cluster %s (%d nodes) up in %.3fs",
            spec.id,
            len(spec.nodes),
            time.monotonic() - started,
        )

    # -- tearing down ----------------------------------------------------------------------

    def _teardown(self, vc_id: str, grace_s: float, *, keep_dirs: bool = True) -> None:
        """Remove every kernel object of the cluster that exists (found, not remembered)."""
        objects = [o for o in self.objects_of(vc_id) if o.kind != Kind.DIR or not keep_dirs]
        keys = sorted(o.name for o in objects if o.kind == Kind.CGROUP)
        if grace_s > 0 and keys:
            self._stop_workloads(keys, grace_s)
        paths = self.paths(vc_id)
        node_dirs = (
            sorted((paths.dir / "nodes").glob("*")) if (paths.dir / "nodes").is_dir() else []
        )
        records = [self.init_record(vc_id, int(d.name)) for d in node_dirs if d.name.isdigit()]
        self.builder.kill_inits(r for r in records if r is not None)
        self.remove_objects(objects)
        for d in node_dirs:
            (d / "init.json").unlink(missing_ok=True)

    def _stop_workloads(self, keys: Sequence[str], grace_s: float) -> None:
        """SIGTERM what runs in the nodes (not their inits); wait up to ``grace_s``."""
        for key in keys:
            self.cgroups.signal_workloads(key, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            busy = False
            for key in keys:
                inner = self.cgroups.inner(key)
                for leaf in self.cgroups.children(key) - {nodes.INIT_LEAF}:
                    busy = busy or bool(inner.task(leaf).procs())
            if not busy:
                return
            time.sleep(0.05)

    def _repair(self, spec: VcSpec, actions: list[str]) -> None:
        """Make a recorded, running cluster whole again without disturbing healthy nodes."""
        ctx, builder = self._context(spec), self.builder
        names = ctx.names
        undo = Undo()  # repairs are kept: only a failing node's partial start is undone
        storage.prepare_vc_dirs(ctx.paths, ctx.uid, ctx.gid)
        storage.write_vc_files(ctx.paths, hosts_file(spec), hostfile(spec))
        if network.ensure_bridge(spec, names):
            actions.append(f"recreated bridge {names.bridge}")
        for veth in network.reattach_ports(names, range(len(spec.nodes))):
            actions.append(f"put {veth} back on the bridge")
        if not firewall.vc_rules_present(names.bridge, spec.gateway, firewall.state()):
            firewall.apply_vc(names.bridge, spec.gateway)
            actions.append("rewrote the firewall rules")
        if spec.gateway:
            network.enable_ip_forward()
        status = self.observe(spec.id)
        restart: list[int] = []
        for node in status.nodes:
            i, record = node.index, self.init_record(spec.id, node.index)
            if node.state == NodeState.DEAD or record is None:
                restart.append(i)
                actions.append(f"restarted {node.hostname}: its init was gone")
                continue
            problems = [p for p in node.problems if "bridge" not in p and "firewall" not in p]
            if problems == [f"netns {names.netns(i)} has lost its name"]:
                network.attach_netns(names.netns(i), record.pid)
                actions.append(f"gave {node.hostname}'s netns its name back")
            elif problems:
                restart.append(i)
                actions.append(f"restarted {node.hostname}: {'; '.join(problems)}")
            elif record.gpu_indices != spec.nodes[i].gpu_indices:
                restart.append(i)
                actions.append(f"restarted {node.hostname}: its GPUs changed")
            elif dict(record.limits) != builder.limit_dict(spec, i):
                self.cgroups.node(names.cgroup(i)).create(builder.limits(spec, i))
                updated = {**record.to_json(), "limits": builder.limit_dict(spec, i)}
                system.write_file(ctx.paths.node(i).init_record, json.dumps(updated), 0o600)
                actions.append(f"changed the limits of {node.hostname}")
        if not restart:
            return
        records = [r for i in restart if (r := self.init_record(spec.id, i)) is not None]
        builder.teardown_nodes(names, ctx.paths, restart, records)
        try:
            builder.nodes_up(ctx, restart, undo)
        except BaseException as exc:
            errors = undo.rollback()
            detail = f"; rollback incomplete: {'; '.join(errors)}" if errors else ""
            raise DriverError(
                f"repairing virtual cluster {spec.name} failed: {exc}{detail}"
            ) from exc

    def delete_image(self, name: str) -> None:
        """Remove an imported image unless a recorded cluster (running or suspended) uses it."""
        users = [v for v in self.list_vcs() if (r := self.record(v)) and r[0].image == name]
        if users:
            raise Conflict(f"image {name} is used by {', '.join(users)}", field="image")
        self.images.delete(name)

    # -- inventory, leaks ------------------------------------------------------------------

    def inventory(self) -> list[KernelObject]:
        """Every object of this runtime (its prefix, its state directory)."""
        return inventory.take(self.config.prefix, self.state_dir, self._cgroups_if_any())

    def objects_of(self, vc_id: str) -> list[KernelObject]:
        tag = vc_tag(validate_vc_id(vc_id))
        return [o for o in self.inventory() if o.tag == tag or o.vc_id == vc_id]

    def leaked_objects(self, known_vcs: Iterable[str]) -> list[KernelObject]:
        """Objects that belong to no cluster in ``known_vcs`` (the platform's database)."""
        known = set(known_vcs)
        tags = {vc_tag(v) for v in known}
        return [
            o
            for o in self.inventory()
            if (o.vc_id is not None and o.vc_id not in known)
            or (o.vc_id is None and o.tag is not None and o.tag not in tags)
            or (o.vc_id is None and o.tag is None)
        ]

    def remove_leaked(self, objects: Iterable[KernelObject]) -> list[str]:
        """Remove the given objects (from ``leaked_objects``); returns what could not be."""
        return self.remove_objects(objects, strict=False)

    def remove_objects(self, objects: Iterable[KernelObject], *, strict: bool = True) -> list[str]:
        """Remove objects in dependency order (processes first, directories last)."""
        return inventory.remove(objects, self._cgroups_if_any(), self.config.prefix, strict=strict)

    def _cgroups_if_any(self) -> NodeCgroups | None:
        if self._cgroups is None and os.geteuid() == 0:
            layout, _ = host.probe_cgroups(self.config.cgroup_parent)
            self._cgroups = NodeCgroups(layout) if layout is not None else None
        return self._cgroups


def _check_resumable(recorded: VcSpec, spec: VcSpec) -> None:
    """A cluster keeps its identity, image and node count (the upper layers depend on them)."""
    for name in ("name", "tenant", "image"):
        if getattr(recorded, name) != getattr(spec, name):
            raise Conflict(
                f"virtual cluster {spec.id}: {name} cannot change ({getattr(recorded, name)} -> "
                f"{getattr(spec, name)})",
                field=name,
            )
    if len(recorded.nodes) != len(spec.nodes):
        raise Conflict(
            f"virtual cluster {spec.id}: the node count cannot change "
            f"({len(recorded.nodes)} -> {len(spec.nodes)})",
            field="nodes",
        )


__all__ = ["ExecResult", "RuntimeConfig", "VcRuntime"]
