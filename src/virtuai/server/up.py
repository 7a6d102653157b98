"""``virtuai up``: the whole platform in one process (API, control loops, local driver,
virtual clusters when the host can run them)."""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from virtuai.api.app import create_app
from virtuai.api.context import ApiContext
from virtuai.auth.oidc import OidcVerifier
from virtuai.clientconfig import cli_config_path, write_cli_config
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
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
from virtuai.settings import SchedulerSettings, Settings
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.inventory import mark_unschedulable_except, record_inventory
from virtuai.store.migrate import migrate
from virtuai.vcruntime import RuntimeConfig, VcRuntime

log = logging.getLogger("virtuai")


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
    home: Path | None = None,
) -> None:
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
    local = LocalDriver(settings.runtime_dir, settings.local)
    drivers: dict[str, Driver] = {"local": local}
    with transaction(sessions) as session:
        nodes = local.inventory()
        record_inventory(session, nodes, clock.now())
        mark_unschedulable_except(session, "local", [n.name for n in nodes])
    for node in nodes:
        log.info("node %s: %s, %d GPU(s)", node.name, node.capacity.describe(), len(node.gpus))

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
        ),
        vcs=vcs,
        vc_options=vc_options(settings),
    )
    scheduling = SchedulingLoop(sessions, clock, context.rules.policy, context.rules.preemptible)
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
    )
    # Life cycle first: it records what ended, which frees room the scheduler can hand out;
    # then virtual clusters admitted by the scheduler are built and their jobs scheduled.
    steps = [lifecycle.tick, scheduling.tick]
    if vcs.runtime is not None:
        steps.append(VcLoop(sessions, vcs.runtime, clock, vc_loop_config(settings)).tick)
    steps.append(lifecycle.tick)
    # A task's end wakes the loops at once, so its slot turns over without waiting a period.
    local.watch_results(context.wake.set)
    runner = LoopRunner(steps, settings.scheduler.interval_s, context.wake, duty=0.3)
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
        engine.dispose()
        log.info("virtuai stopped; running jobs go on and will be taken back at the next start")


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
