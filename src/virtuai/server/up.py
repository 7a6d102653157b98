"""``virtuai up``: the whole platform in one process (API, control loops, local driver,
virtual clusters when the host can run them)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from virtuai import web
from virtuai.api.app import create_app, warm_routes
from virtuai.clientconfig import cli_config_path, write_cli_config
from virtuai.control.environments import EnvBuildConfig, EnvBuilder
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
from virtuai.control.membership import Membership, MembershipConfig
from virtuai.control.nodewatch import NodeWatch, NodeWatchConfig
from virtuai.control.notebooks import NotebookCuller
from virtuai.control.replicaports import PortRange, ReplicaPorts
from virtuai.control.runner import LoopRunner
from virtuai.control.scheduling import SchedulingLoop
from virtuai.control.serving import ReconcilerConfig, ServiceReconciler
from virtuai.control.sites import SiteLoop, SiteLoopConfig
from virtuai.control.staging import StagingConfig, StagingLoop
from virtuai.control.vclusters import VcLoop, VcLoopConfig
from virtuai.domain.clock import SystemClock
from virtuai.drivers.base import Driver
from virtuai.drivers.local.driver import LocalDriver
from virtuai.errors import ConfigurationError
from virtuai.host import portguard
from virtuai.proxy.nginx import Nginx
from virtuai.proxy.nginxauth import NginxAuth
from virtuai.server.apiparts import (
    api_context,
    policy_from_settings,
    proxy_front,
    share_generations,
)
from virtuai.server.bootstrap import bootstrap_admin
from virtuai.server.gcsettle import SettleOnce
from virtuai.services.serving import start_replica
from virtuai.services.vclusters import VcRuntimeAccess
from virtuai.settings import Settings
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.installation import installation_id
from virtuai.store.inventory import describe_nodes, record_inventory
from virtuai.store.migrate import migrate
from virtuai.vcruntime import RuntimeConfig, VcRuntime

log = logging.getLogger("virtuai")

__all__ = ["Platform", "compose", "policy_from_settings"]


@dataclass(frozen=True, slots=True)
class Platform:
    """What ``compose`` built and started: the application to serve, and how to stop."""

    app: Any
    stop: Callable[[], None]
    # The proxy's fast path (``proxy.fastpath``): plain proxied requests without ASGI.
    fast: Callable[[dict[str, Any]], Any] | None = None
    # ``proxy.engine: nginx``: a request nginx served itself (``proxy.nginxauth``).
    count: Callable[[dict[tuple[str, int], int]], None] | None = None
    # What API worker processes (``server/workers.py``) are started with: the settings
    # with the installation's names, this machine's node, and what wakes the loops.
    settings: Settings | None = None
    node: str = ""
    wake: Callable[[], None] | None = None


def compose(settings: Settings, *, nginx: Nginx | None = None) -> Platform:
    """Build and start everything behind the listening socket (``server/start.py`` listens,
    and serves the gate meanwhile): database, drivers, loops, the API and the proxy."""
    clock = SystemClock()
    engine = create_db_engine(settings.effective_database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    # Host-global names (cgroups, Unix users, workspaces, kernel objects) come from the
    # installation's id, so two installations on one host never touch each other's.
    iid = installation_id(sessions)
    settings = settings.for_installation(iid)
    log.info("installation %s", iid or "(before installation ids: original names)")
    secure_state(settings)
    share_generations(settings)

    if os.geteuid() != 0:
        log.warning(
            "not running as root: jobs run as %s without cgroup limits or per-tenant users",
            _current_user(),
        )
    local = LocalDriver(settings.runtime_dir, settings.local, node_name=settings.cluster.node)
    drivers: dict[str, Driver] = {"local": local}
    node_name = register_node(sessions, clock, local, settings)

    url = f"http://{_client_host(settings.host)}:{settings.port}"
    first = bootstrap_admin(sessions, clock)
    if first is not None:
        write_cli_config(url, first.token)
        # Printed once, never again: only its hash is stored.
        print(
            f"\nvirtuai: created administrator {first.admin!r}. Its token (shown only now):\n"
            f"  {first.token}\n"
            f"The CLI is configured in {cli_config_path()} (mode 0600).\n",
            flush=True,
        )

    vcs = vc_runtime(settings)
    ports = replica_ports(settings, sessions, iid, node_name, nginx.worker_uid if nginx else None)
    # The loops' own events (a task ended, a launch returned, a build finished) wake the
    # next round without the pause that API writes get (see LoopRunner).
    urgent = threading.Event()

    def wake_now() -> None:
        urgent.set()
        context.wake.set()

    context = api_context(settings, sessions, clock, drivers, vcs, ports.problem)
    sites = SiteLoop(
        sessions, drivers, clock, SiteLoopConfig(kill_grace_s=settings.local.kill_grace_s)
    )
    lifecycle = LifecycleLoop(
        sessions,
        drivers,
        clock,
        LifecycleConfig(
            workspaces_dir=settings.workspaces_dir,
            kill_grace_s=settings.local.kill_grace_s,
            half_life_s=settings.scheduler.half_life_s,
            job_token_key=context.job_token_key,
            api_url=url,
        ),
        vnodes=vcs.runtime,
        host=node_name,
        wake=wake_now,
        remote_nodes=lambda: sites.node_names() if member.is_leader else frozenset(),
        ports=ports,
    )
    member = Membership(
        sessions,
        clock,
        membership_config(settings, node_name, engine.dialect.name),
        on_lead=wake_now,
        # One database on this machine (SQLite): no other node can take its jobs over, and a
        # slow write lock is not a lost database.
        on_isolated=None if engine.dialect.name == "sqlite" else lifecycle.fence_local,
    )
    scheduling = SchedulingLoop(
        sessions,
        clock,
        context.rules.policy,
        context.rules.preemptible,
        guard=member.guard,
        max_walltime_by_class=settings.cluster.max_walltime_by_class,
        epoch=member.epoch,
    )
    watch = NodeWatch(
        sessions,
        clock,
        NodeWatchConfig(node_lost_s=settings.cluster.node_lost_s),
        member.guard,
        own_node=node_name,
    )
    # First the node reconciler's first half: it records what ended on this node and stops
    # what must stop.  Then sites (the leader only): their drivers (in `drivers`, shared with
    # the life cycle and the API) and one batched look at each site's queue.  Then the
    # leader's steps (a new leader admits at once), which hand out the room just freed, and
    # last the reconciler's second half, which starts and launches what was admitted: one
    # round turns a slot over.  An end wakes the next round at once (no duty pause).
    assert context.metrics is not None
    steps = [
        lifecycle.settle,
        leading(member, sites.tick),
        leading(member, context.metrics.timed(scheduling.tick)),
        leading(member, watch.tick),
    ]
    if vcs.runtime is not None:
        vc_loop = VcLoop(sessions, vcs.runtime, clock, vc_loop_config(settings))
        steps.append(leading(member, vc_loop.tick))
    assert context.environments is not None
    builder = EnvBuilder(
        sessions,
        clock,
        EnvBuildConfig(context.environments, user_prefix=settings.local.user_prefix),
        wake=wake_now,
        images=None if vcs.runtime is None else vcs.runtime.job_image,
    )
    steps.append(leading(member, builder.tick))
    staging = StagingLoop(
        sessions,
        sites,
        clock,
        StagingConfig(workspaces_dir=settings.workspaces_dir),
        wake=wake_now,
    )
    steps.append(leading(member, staging.tick))
    app = create_app(context)
    web.mount(app)
    warm_routes(app)  # not at the first request after a restart (api/app.py)
    parts = proxy_front(settings, sessions, clock, context, app, local, node_name, node_name)
    proxy, board, activity, culling = parts.proxy, parts.board, parts.activity, parts.culling
    steps.append(board.publish)
    steps.append(activity.tick)
    steps.append(leading(member, NotebookCuller(sessions, clock, culling).tick))
    reconciler = ServiceReconciler(
        sessions,
        clock,
        ReconcilerConfig(
            job_token_key=context.job_token_key,
            idle_timeout_s=settings.services.idle_timeout_s,
            drain_s=settings.services.drain_s,
            interval_s=settings.services.reconcile_interval_s,
            scale_down_delay_s=settings.services.scale_down_delay_s,
            renew_before_s=settings.services.renew_before_s,
        ),
        lambda session, service, now: start_replica(session, service, context.rules, now),
        traffic_last=board.last,
        traffic_rate=board.rate,
        forget_traffic=board.forget,
        wake=context.wake.set,
        own_nodes=frozenset(local.node_names()),
        leads=lambda: member.is_leader,
        port_holder=local.port_holder,
    )
    # Every server probes its own nodes' replicas; the leader alone decides.
    steps.append(reconciler.tick)
    steps.append(lifecycle.start)
    # A task's end wakes the loops at once, so its slot turns over without waiting a period.
    local.watch_results(wake_now)
    # Once the first leading round has built what lives as long as the leadership (the
    # pending queue's cache, its snapshot), it is frozen too (server/gcsettle.py).
    steps.append(SettleOnce(lambda: member.is_leader))
    runner = LoopRunner(steps, settings.scheduler.interval_s, context.wake, duty=0.3, urgent=urgent)
    member.start()
    runner.start()
    log.info("virtuai is up at %s (state in %s)", url, settings.home)

    def stop() -> None:
        # Running jobs are not stopped: their supervisors live on, and the
        # next `virtuai up` takes them back.
        runner.stop()
        member.stop()
        sites.close()
        local.close()
        engine.dispose()
        log.info("virtuai stopped; running jobs go on and will be taken back at the next start")

    if nginx is not None:  # nginx in front (``proxy.nginx``): its question answered
        front = NginxAuth(proxy, proxy, parts.routes, nginx.token)
        return Platform(app=front, stop=stop, fast=proxy.fast, count=front.count)
    wake = context.wake.set
    return Platform(
        app=proxy, stop=stop, fast=proxy.fast, settings=settings, node=node_name, wake=wake
    )


def secure_state(settings: Settings) -> None:
    """State directory 0700, database files 0600, at every start, whatever they were:
    job environments (secrets) and token hashes are in them."""
    settings.home.chmod(0o700)
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    database = Path(url.database)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


def register_node(
    sessions: sessionmaker[Session], clock: SystemClock, local: LocalDriver, settings: Settings
) -> str:
    """Record this machine as a node (capacity, class, labels, address); its name."""
    group = settings.cluster
    address = group.address or _advertised_address(settings.host)
    with transaction(sessions) as session:
        nodes = local.inventory()
        record_inventory(session, nodes, clock.now())
        describe_nodes(session, [n.name for n in nodes], group.node_class, group.labels, address)
    for node in nodes:
        log.info(
            "node %s (%s, %s): %s, %d GPU(s)",
            node.name,
            group.node_class,
            address,
            node.capacity.describe(),
            len(node.gpus),
        )
    return nodes[0].name


def replica_ports(
    settings: Settings,
    sessions: sessionmaker[Session],
    iid: str,
    node: str,
    nginx_uid: int | None = None,
) -> ReplicaPorts:
    """Services' replicas' ports: from the reserved range, and guarded when this host can
    (root and nft); else one warning, here, and ``virtuai doctor`` says it again."""
    group = settings.services
    guard = None
    why = "disabled (services.isolate: false)" if not group.isolate else portguard.unavailable()
    if why is None:
        guard = portguard.PortGuard(portguard.table_name(iid), also=nginx_uid)
        log.info("services' replicas: ports %d-%d, reachable by the server only (nftables %s)",
                 group.port_min, group.port_max, guard.table)  # fmt: skip
    else:
        log.warning(
            "services' replicas are reachable by any process of this machine, not only "
            "through the proxy: %s",
            why,
        )
    return ReplicaPorts(
        sessions, guard, host=node, ports=PortRange(group.port_min, group.port_max), problem=why
    )


def membership_config(settings: Settings, node: str, dialect: str) -> MembershipConfig:
    group = settings.cluster
    interval, ttl = group.heartbeat_interval_s, group.lease_ttl_s
    if dialect == "sqlite":
        # One machine: nobody can take over, so heartbeats need not cost the write lock often.
        interval, ttl = max(interval, 2.0), max(ttl, 10.0)
    return MembershipConfig(
        node=node, interval_s=interval, lease_ttl_s=max(ttl, 3 * interval),
        self_fence_s=group.self_fence_s,
    )  # fmt: skip


def leading(member: Membership, step: Callable[[], object]) -> Callable[[], object]:
    """``step`` runs only on the instance that holds the scheduling lease."""

    def run() -> object:
        return step() if member.is_leader else None

    run.__qualname__ = f"leader:{getattr(step, '__qualname__', 'step')}"
    return run


def _advertised_address(host: str) -> str:
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing address
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def vc_runtime(settings: Settings) -> VcRuntimeAccess:
    """The virtual-cluster runtime if this host can run clusters; else why not (logged)."""
    group = settings.vclusters
    if not group.enabled:
        return VcRuntimeAccess(None, "virtual clusters are disabled on this server")
    runtime = VcRuntime(
        RuntimeConfig(
            state_dir=settings.vc_state_dir,
            prefix=group.prefix,
            cgroup_parent=group.cgroup_parent,
            user_prefix=settings.local.user_prefix,
        )
    )
    try:
        runtime.check_host()
    except ConfigurationError as error:
        log.warning("virtual clusters are not available: %s", error.message)
        return VcRuntimeAccess(None, error.message)
    log.info("virtual clusters: state in %s, prefix %s", settings.vc_state_dir, group.prefix)
    return VcRuntimeAccess(runtime)


def vc_loop_config(settings: Settings) -> VcLoopConfig:
    group = settings.vclusters
    return VcLoopConfig(
        reconcile_interval_s=group.reconcile_interval_s, stop_grace_s=group.stop_grace_s
    )


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
