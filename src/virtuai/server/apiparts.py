"""The API's half of the platform, built alike by the main process (``server/up.py``)
and by each API worker process (``server/apiworker.py``): the API's context, and the
proxy in front of the API with what counts its traffic."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from virtuai.api.browser import BrowserSessions
from virtuai.api.context import ApiContext
from virtuai.auth.keys import load_or_create_key
from virtuai.auth.oidc import OidcVerifier
from virtuai.auth.oidc_login import OidcLogin
from virtuai.control.notebooks import CullerConfig, NotebookActivity
from virtuai.control.servicetraffic import LocalTraffic, TrafficBoard
from virtuai.control.sitereaders import DriversWithSiteReaders
from virtuai.domain.clock import SystemClock
from virtuai.domain.pyenvs import EnvOptions
from virtuai.domain.services import PortRules
from virtuai.domain.workload import PriorityClass
from virtuai.drivers.base import Driver
from virtuai.drivers.local.driver import LocalDriver
from virtuai.host import portguard
from virtuai.proxy.app import ProxyApp
from virtuai.proxy.peers import Peers
from virtuai.proxy.routes import RouteTable, Suspects, resolve_notebook
from virtuai.proxy.services import ServiceHolds, ServiceResolver, Traffic
from virtuai.scheduler.snapshot import Policy
from virtuai.services.metrics import Metrics
from virtuai.services.notebooks import NotebookOptions
from virtuai.services.planning import SchedulingRules
from virtuai.services.submitbasis import GENERATION as BASIS_GENERATION
from virtuai.services.tokencache import GENERATION
from virtuai.services.vclusters import VcOptions, VcRuntimeAccess
from virtuai.settings import SchedulerSettings, Settings


def auth_generation_path(settings: Settings) -> Path:
    """The counter every process of one server bumps at an auth change."""
    return settings.home / "auth-generation"


def share_generations(settings: Settings) -> None:
    """Every process of this server (API workers) empties its token cache when any of them
    commits an auth change (``services.tokencache``), and its submits' basis when any of
    them changes a tenant, a quota or a node (``services.submitbasis``)."""
    GENERATION.share(auth_generation_path(settings))
    BASIS_GENERATION.share(settings.home / "submit-basis-generation")


def api_context(
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: SystemClock,
    drivers: dict[str, Driver],
    vcs: VcRuntimeAccess,
    ports_problem: str | None,
) -> ApiContext:
    """What the API needs: the same in the main process and in API workers
    (``server/apiworker.py``)."""
    return ApiContext(
        sessions=sessions,
        clock=clock,
        verifier=OidcVerifier(settings.oidc),
        # Site jobs' logs on every instance: the leader's site drivers, or a reader of its own.
        drivers=DriversWithSiteReaders(drivers, sessions),
        rules=SchedulingRules(
            policy=policy_from_settings(settings.scheduler),
            priority_classes={
                p.name: PriorityClass(p.name, p.value, p.preemptible)
                for p in settings.scheduler.priority_classes
            },
            max_walltime_s=settings.limits.max_walltime_s,
            max_array_size=settings.limits.max_array_size,
            max_walltime_by_class=settings.cluster.max_walltime_by_class,
        ),
        max_body_bytes=settings.limits.max_body,
        metrics=Metrics(sessions),
        metrics_readers=frozenset(settings.metrics.readers),
        vcs=vcs,
        vc_options=vc_options(settings),
        job_token_key=load_or_create_key(settings.home / "job-token.key"),
        browser=BrowserSessions(
            key=load_or_create_key(settings.session_key_path),
            ttl_s=settings.web.session_ttl_s,
            oidc=OidcLogin(settings.oidc)
            if settings.oidc.issuer and settings.oidc.client_id
            else None,
        ),
        site_keys_dir=settings.home / "sites",
        environments=EnvOptions(
            workspaces_dir=settings.workspaces_dir, logs_dir=settings.home / "env-logs"
        ),
        notebooks=notebook_options(settings),
        peer_port=settings.port,
        service_idle_timeout_s=settings.services.idle_timeout_s,
        service_ports_problem=ports_problem,
        submit_lock=settings.home / "submits.lock"
        if settings.effective_database_url.startswith("sqlite")
        else None,
        service_port_rules=PortRules(
            ephemeral=portguard.ephemeral_range(),
            replicas=(settings.services.port_min, settings.services.port_max),
            server=frozenset({settings.port}),
        ),
    )


@dataclass(frozen=True, slots=True)
class ProxyFront:
    proxy: ProxyApp
    board: TrafficBoard  # its ``publish``: a step of the process's loops
    activity: NotebookActivity  # its ``tick``: likewise
    culling: CullerConfig
    routes: RouteTable


def proxy_front(
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: SystemClock,
    context: ApiContext,
    app: Any,
    local: LocalDriver,
    node_name: str,
    traffic_name: str,
) -> ProxyFront:
    """The proxy in front of ``app``, with what counts its traffic.  ``traffic_name``: the
    row this process publishes its services' traffic under (the leader sums every row),
    the node's name in the main process, one of its own in an API worker."""
    # The proxy in front of the API: /user/... and /svc/... to workloads, the rest to `app`.
    # Workloads on other machines: through their node's server, on the same port as ours.
    peers = Peers(frozenset(local.node_names()), settings.port, node_name)
    traffic = Traffic(settings.services.rate_window_s)
    # Requests through every server count: each writes its own, the leader sums them.
    board = TrafficBoard(
        sessions,
        clock,
        traffic_name,
        LocalTraffic(traffic.services, traffic.last, traffic.rate),
        publish_s=settings.services.traffic_publish_s,
    )
    routes = RouteTable(
        sessions,
        context.job_token_key,
        resolvers={"user": resolve_notebook, "svc": ServiceResolver(traffic)},
    )
    suspects = Suspects()  # replicas a request could not reach (retried on another)
    holds = ServiceHolds(
        sessions,
        clock,
        routes,
        timeout_s=settings.services.cold_start_timeout_s,
        wake=context.wake.set,
        suspects=suspects,
        waiting=traffic.waiting,
    )
    proxy = ProxyApp(context, routes, app, services=holds, peers=peers, suspects=suspects)
    culling = CullerConfig(
        job_token_key=context.job_token_key,
        default_idle_timeout_s=settings.notebooks.idle_timeout_s,
        interval_s=settings.notebooks.cull_interval_s,
    )
    # Every server records its own notebooks' activity; the leader culls on what is recorded.
    activity = NotebookActivity(
        sessions,
        clock,
        culling,
        own_nodes=frozenset(local.node_names()),
        proxy_activity=proxy.activity.last,
    )
    return ProxyFront(proxy, board, activity, culling, routes)


def notebook_options(settings: Settings) -> NotebookOptions:
    group = settings.notebooks
    return NotebookOptions(
        workspaces_dir=settings.workspaces_dir,
        python=None if group.python is None else str(group.python),
        requirements=group.requirements,
        default_time_s=group.default_time_s,
        idle_timeout_s=group.idle_timeout_s,
    )


def vc_options(settings: Settings) -> VcOptions:
    group = settings.vclusters
    return VcOptions(
        subnet_pool=group.subnet_pool,
        subnet_prefixlen=group.subnet_prefixlen,
        exec_timeout_s=group.exec_timeout_s,
    )


def policy_from_settings(scheduler: SchedulerSettings) -> Policy:
    if scheduler.las:
        return replace(
            Policy.las(half_life_s=scheduler.half_life_s),
            fair_share=scheduler.fair_share,
            backfill=scheduler.backfill,
            preemption=scheduler.preemption,
            borrowing=scheduler.borrowing,
            allocation_weight=scheduler.allocation_weight,
            min_run_s=max(scheduler.min_run_s, Policy.las().min_run_s),
        )
    return Policy(
        fair_share=scheduler.fair_share,
        backfill=scheduler.backfill,
        preemption=scheduler.preemption,
        borrowing=scheduler.borrowing,
        half_life_s=scheduler.half_life_s,
        allocation_weight=scheduler.allocation_weight,
        min_run_s=scheduler.min_run_s,
    )
