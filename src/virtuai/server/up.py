"""``virtuai up``: the whole platform in one process (API, control loops, local driver,
virtual clusters when the host can run them)."""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from virtuai.api.app import create_app
from virtuai.api.context import ApiContext
from virtuai.auth.oidc import OidcVerifier
from virtuai.clientconfig import cli_config_path, write_cli_config
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
from virtuai.control.membership import Membership, MembershipConfig
from virtuai.control.nodewatch import NodeWatch, NodeWatchConfig
from virtuai.control.runner import LoopRunner
from virtuai.control.scheduling import SchedulingLoop
from virtuai.control.vclusters import VcLoop, VcLoopConfig
from virtuai.domain.clock import SystemClock
from virtuai.domain.workload import PriorityClass
from virtuai.drivers.base import Driver
from virtuai.drivers.local.driver import LocalDriver
from virtuai.errors import ConfigurationError, VirtuaiError
from virtuai.scheduler.snapshot import Policy
from virtuai.server.bootstrap import bootstrap_admin
from virtuai.services.planning import SchedulingRules
from virtuai.services.vclusters import VcOptions, VcRuntimeAccess
from virtuai.settings import ClusterSettings, SchedulerSettings, Settings
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.inventory import describe_nodes, record_inventory
from virtuai.store.migrate import migrate
from virtuai.vcruntime import RuntimeConfig, VcRuntime

log = logging.getLogger("virtuai")


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
    home: Path | None = None,
    node: str | None = None,
    node_class: str | None = None,
    labels: dict[str, str] | None = None,
    address: str | None = None,
) -> None:
    cluster: dict[str, Any] = {
        key: value
        for key, value in {
            "node": node,
            "node_class": node_class,
            "labels": labels,
            "address": address,
        }.items()
        if value is not None
    }
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "database_url": database_url,
            "home": home,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    if cluster:
        merged = settings.cluster.model_dump() | cluster
        settings = settings.model_copy(update={"cluster": ClusterSettings(**merged)})
    _configure_logging()
    try:
        with _single_server(settings.home):
            _serve(settings)
    except VirtuaiError as error:
        log.error("%s", error.message)
        sys.exit(1)


def _serve(settings: Settings) -> None:
    clock = SystemClock()
    engine = create_db_engine(settings.effective_database_url)
    migrate(engine)
    sessions = make_session_factory(engine)

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
    context = ApiContext(
        sessions=sessions,
        clock=clock,
        verifier=OidcVerifier(settings.oidc),
        drivers=drivers,
        rules=SchedulingRules(
            policy=policy_from_settings(settings.scheduler),
            priority_classes={
                p.name: PriorityClass(p.name, p.value, p.preemptible)
                for p in settings.scheduler.priority_classes
            },
            max_walltime_by_class=settings.cluster.max_walltime_by_class,
        ),
        vcs=vcs,
        vc_options=vc_options(settings),
    )
    lifecycle = LifecycleLoop(
        sessions,
        drivers,
        clock,
        LifecycleConfig(
            workspaces_dir=settings.workspaces_dir,
            kill_grace_s=settings.local.kill_grace_s,
            half_life_s=settings.scheduler.half_life_s,
        ),
        vnodes=vcs.runtime,
        host=node_name,
        wake=context.wake.set,
    )
    member = Membership(
        sessions,
        clock,
        membership_config(settings, node_name, engine.dialect.name),
        on_lead=context.wake.set,
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
    )
    watch = NodeWatch(
        sessions,
        clock,
        NodeWatchConfig(node_lost_s=settings.cluster.node_lost_s),
        member.guard,
        own_node=node_name,
    )
    # The leader's steps first (a new leader admits at once), then the node reconciler, which
    # starts what was admitted and records what ended; an end wakes the next round at once,
    # so the room it frees is handed out without waiting a period.
    steps = [leading(member, scheduling.tick), leading(member, watch.tick)]
    if vcs.runtime is not None:
        vc_loop = VcLoop(sessions, vcs.runtime, clock, vc_loop_config(settings))
        steps.append(leading(member, vc_loop.tick))
    steps.append(lifecycle.tick)
    runner = LoopRunner(steps, settings.scheduler.interval_s, context.wake)
    member.start()
    runner.start()
    log.info("virtuai is up at %s (state in %s)", url, settings.home)
    try:
        uvicorn.run(
            create_app(context),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
    finally:
        # Running jobs are not stopped: their supervisors live on, and the
        # next `virtuai up` takes them back.
        runner.stop()
        member.stop()
        engine.dispose()
        log.info("virtuai stopped; running jobs go on and will be taken back at the next start")


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


@contextmanager
def _single_server(home: Path) -> Iterator[None]:
    """One server per state directory: two would launch the same work twice."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_path = home / "server.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Path(lock_path).read_text().strip() or "?"
            raise ConfigurationError(
                f"another virtuai server (pid {other}) is running with state in {home}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


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


def vc_options(settings: Settings) -> VcOptions:
    group = settings.vclusters
    return VcOptions(
        subnet_pool=group.subnet_pool,
        subnet_prefixlen=group.subnet_prefixlen,
        exec_timeout_s=group.exec_timeout_s,
    )


def vc_loop_config(settings: Settings) -> VcLoopConfig:
    group = settings.vclusters
    return VcLoopConfig(
        reconcile_interval_s=group.reconcile_interval_s, stop_grace_s=group.stop_grace_s
    )


def policy_from_settings(scheduler: SchedulerSettings) -> Policy:
    return Policy(
        fair_share=scheduler.fair_share,
        backfill=scheduler.backfill,
        preemption=scheduler.preemption,
        borrowing=scheduler.borrowing,
        half_life_s=scheduler.half_life_s,
        allocation_weight=scheduler.allocation_weight,
    )


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("VIRTUAI_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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
