"""The services' reconciler: replicas started, probed, rolled, drained and scaled.

Every server runs it; only the leader decides.  Each pass, for every service
(idempotent: it looks at what is, never at what it did last time):

1. reads the service and its replicas (jobs of kind ``service``);
2. probes the running replicas *on this server's own nodes* that are due
   (``readiness.path`` on the replica's port; 2xx or 3xx is ready), with no
   database session open.  Probes are the node's, as a kubelet's are: a
   replica's port refuses every other machine (``control.replicaports``), and
   only its own server holds the secret of a notebook-like upstream;
3. in one transaction: records readiness; restarts a replica that failed its
   probe ``failure_threshold`` times in a row, or was not ready
   ``start_timeout_s`` after it started (cancelled with the reason; a new one is
   started in its place); stops drained replicas ``drain_s`` after they left the
   proxy's route; forgets replicas whose job has ended; then asks
   ``domain.services`` how many replicas are wanted (request rate, idleness,
   a cold start's demand) and which to start and drain (rolling one by one on a
   changed spec, and replacing a replica near its time limit before the limit
   ends it: ``domain.services.renewal_margin_s``), and does it.  A server that
   does not lead only records its own probes (and restarts a replica of its node
   that failed them).

A deleted service has all its replicas cancelled, and its row goes once they
have ended.  The proxy's traffic (``traffic_last``, ``traffic_rate``) is every
server's: ``control.servicetraffic.TrafficBoard`` adds what the other servers
recorded in the database to this server's own counts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.notebooks import notebook_upstream
from virtuai.domain.clock import Clock
from virtuai.domain.notebooks import format_duration
from virtuai.domain.services import (
    NOT_READY_END,
    ReplicaView,
    ServiceSpec,
    crash_backoff_s,
    desired_replicas,
    plan_replicas,
    renewal_margin_s,
)
from virtuai.domain.workload import FINISHED_STATES, JobState
from virtuai.drivers.base import Handle
from virtuai.drivers.local.ports import Holder
from virtuai.errors import VirtuaiError
from virtuai.scheduler.reasons import PORT_PREFIX
from virtuai.store.db import read_session, transaction
from virtuai.store.models import ServiceReplicaRow, ServiceRow, TaskRow
from virtuai.store.serviceevents import record_service_event
from virtuai.store.transitions import request_cancel

log = logging.getLogger(__name__)
_FINISHED = frozenset(s.value for s in FINISHED_STATES)
DELETING = "deleting"
STARTING_PROBE_S = 0.25
# What a probe that found another process listening on the replica's port says.
FOREIGN = "is held by a process that is not the replica's"

StartReplica = Callable[[Session, ServiceRow, dt.datetime], ServiceReplicaRow]
Probe = Callable[[str, float], tuple[bool, str]]


def http_probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """``(ready, what was seen)``: a GET answered 2xx or 3xx is ready."""
    try:
        response = httpx.get(url, timeout=timeout_s, trust_env=False, follow_redirects=False)
    except httpx.HTTPError as error:
        return False, f"GET {url}: {type(error).__name__}"
    ok = 200 <= response.status_code < 400
    return ok, f"GET {url}: {response.status_code}"


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    job_token_key: bytes
    idle_timeout_s: float = 900.0
    drain_s: float = 12.0
    interval_s: float = 0.5
    scale_down_delay_s: float = 30.0
    # A replica's replacement starts at least this long before its time limit
    # (``domain.services.renewal_margin_s``).
    renew_before_s: float = 30.0
    # Replicas that end before they are ready, in a row, delay the next one: doubling from
    # ``crash_backoff_s`` up to ``crash_backoff_max_s`` (``domain.services.crash_backoff_s``).
    crash_backoff_s: float = 1.0
    crash_backoff_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class _Seen:
    replica_id: int
    job_state: str
    cancel_requested: bool
    started_at: dt.datetime | None
    url: str | None  # where to probe it now; None: not running
    node: str  # where it runs ("" if not yet)
    due: bool
    port: int = 0  # its $PORT
    handle: Handle | None = None  # its task's, to tell its own listener from another's


class ServiceReconciler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: ReconcilerConfig,
        start_replica: StartReplica,
        *,
        traffic_last: Callable[[int], float | None] = lambda _service: None,
        traffic_rate: Callable[[int], float] = lambda _service: 0.0,
        forget_traffic: Callable[[Session, int], None] = lambda _session, _service: None,
        probe: Probe = http_probe,
        wake: Callable[[], None] = lambda: None,
        own_nodes: frozenset[str] | None = None,
        leads: Callable[[], bool] = lambda: True,
        port_holder: Callable[[Handle, int], Holder] | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._config = config
        self._start_replica = start_replica
        self._traffic_last = traffic_last
        self._traffic_rate = traffic_rate
        self._forget_traffic = forget_traffic
        self._probe = probe
        self._wake = wake
        # The nodes whose replicas this server probes (None: every node, one machine).
        self._own_nodes = own_nodes
        self._leads = leads
        # Who listens on a replica's port (``drivers.local.ports.port_holder``); None: no
        # check (a driver that cannot tell).
        self._port_holder = port_holder
        self._next_at = 0.0
        self._last_down: dict[int, float] = {}

    def tick(self) -> None:
        now = self._clock.now().timestamp()
        if now < self._next_at:
            return
        self._next_at = now + self._config.interval_s
        with read_session(self._sessions) as session:
            ids = list(session.scalars(select(ServiceRow.id).order_by(ServiceRow.id)))
            session.rollback()
        for service_id in ids:
            try:  # one service's trouble never stops the others
                self.reconcile(service_id)
            except Exception:
                log.exception("service %d: reconciling failed", service_id)

    def reconcile(self, service_id: int) -> None:
        seen = self._observe(service_id)
        if seen is None:
            return
        spec, replicas = seen
        results = {
            r.replica_id: self._check(r, r.url, spec)
            for r in replicas
            if r.url is not None and r.due and self._owns(r.node)
        }
        leads = self._leads()
        if not leads and not results:
            return
        started = False
        with transaction(self._sessions) as session:
            service = session.get(ServiceRow, service_id)
            if service is not None and leads:
                started = self._apply(session, service, results)
            elif service is not None:
                self._record_own(session, service, results)
        if started:
            self._wake()

    def _check(self, replica: _Seen, url: str, spec: ServiceSpec) -> tuple[bool, str]:
        """The readiness probe, asked only of the replica's own listener: a process of the
        machine that binds the port first (or beside it) is never probed as the replica."""
        if self._port_holder is not None and replica.handle is not None:
            holder = self._port_holder(replica.handle, replica.port)
            if holder is Holder.FOREIGN:
                return False, f"port {replica.port} {FOREIGN}"
            if holder is Holder.NONE:
                return False, f"nothing listens on port {replica.port} yet"
        return self._probe(url, spec.readiness.timeout_s)

    def _owns(self, node: str) -> bool:
        return self._own_nodes is None or node in self._own_nodes

    def _record_own(
        self, session: Session, service: ServiceRow, results: dict[int, tuple[bool, str]]
    ) -> None:
        """A server that does not lead: its own nodes' probes, nothing else."""
        spec = ServiceSpec.from_json(service.spec)
        now = self._clock.now()
        for replica in service.replicas:
            if replica.id in results and replica.job.state not in _FINISHED:
                self._record_probe(session, service, spec, replica, results[replica.id], now)

    # -- 1. what is --------------------------------------------------------------------------

    def _observe(self, service_id: int) -> tuple[ServiceSpec, list[_Seen]] | None:
        now = self._clock.now()
        with read_session(self._sessions) as session:
            service = session.get(ServiceRow, service_id)
            if service is None:
                return None
            spec = ServiceSpec.from_json(service.spec)
            seen = []
            for replica in service.replicas:
                job = replica.job
                upstream = notebook_upstream(session, job, self._config.job_token_key)
                # A replica that was never ready is asked often: a cold start waits on it.
                every = spec.readiness.interval_s if replica.ready_at else STARTING_PROBE_S
                due = replica.last_probe_at is None or (
                    (now - replica.last_probe_at).total_seconds() >= every
                )
                url = None
                handle = None
                if upstream is not None and job.cancel_requested_at is None:
                    url = upstream.url() + spec.readiness.path
                    handle = session.scalar(
                        select(TaskRow.handle).where(
                            TaskRow.job_id == job.id,
                            TaskRow.attempt == job.attempt,
                            TaskRow.index == 0,
                        )
                    )
                seen.append(
                    _Seen(
                        replica_id=replica.id,
                        job_state=job.state,
                        cancel_requested=job.cancel_requested_at is not None,
                        started_at=job.started_at,
                        url=url,
                        node="" if upstream is None else upstream.node,
                        due=due and replica.draining_at is None,
                        port=job.master_port or 0,
                        handle=None if handle is None else dict(handle),
                    )
                )
            session.rollback()
        return spec, seen

    # -- 3. what to do -----------------------------------------------------------------------

    def _apply(
        self, session: Session, service: ServiceRow, results: dict[int, tuple[bool, str]]
    ) -> bool:
        now = self._clock.now()
        spec = ServiceSpec.from_json(service.spec)
        if service.crashes and service.crash_generation != service.generation:
            self._forget_crashes(service)  # a new spec (the fix, maybe): no back-off for it
        live: list[ServiceReplicaRow] = []
        for replica in list(service.replicas):
            job = replica.job
            if job.state in _FINISHED:
                if replica.generation != service.generation:
                    # A replica of a spec since replaced: its end is the roll's, not news
                    # of the service (the fixed spec must not show the broken one's crash).
                    log.info("service %s: outdated replica job %d ended", service.name, job.id)
                    self._event(
                        session,
                        service,
                        f"replica job {job.id} of generation {replica.generation} ended "
                        f"({job.state})",
                        now,
                    )
                elif replica.draining_at is None and service.state != DELETING:
                    self._tell(session, service, self._ended(service, replica, now), now)
                else:
                    self._event(session, service, f"replica job {job.id} ended ({job.state})", now)
                service.replicas.remove(replica)  # delete-orphan: the row goes
                continue
            live.append(replica)
            self._record_probe(session, service, spec, replica, results.get(replica.id), now)
            if replica.ready:
                self._forget_crashes(service)
        if service.state == DELETING:
            for replica in live:
                if replica.job.cancel_requested_at is None:
                    request_cancel(session, replica.job, now=now, actor="services", why="deleted")
            if not live:
                self._forget_traffic(session, service.id)
                session.delete(service)
                log.info("service %s deleted", service.name)
            return False
        for replica in live:
            self._stop_if_drained(session, replica, now)
        expiring = {r.id for r in live if self._expiring(spec, r, now)}
        desired = self._desired(service, spec, [r for r in live if r.id not in expiring], now)
        views = [
            ReplicaView(
                id=r.id,
                generation=r.generation,
                ready=r.ready,
                draining=r.draining_at is not None,
                order=r.id,
                waits_for_port=r.job.state == JobState.PENDING.value
                and r.job.reason.startswith(PORT_PREFIX),
                expiring=r.id in expiring,
            )
            for r in live
        ]
        plan = plan_replicas(views, service.generation, desired)
        by_id = {r.id: r for r in live}
        for replica_id in plan.drain:
            replica = by_id[replica_id]
            self._drain(session, replica, now)
            why = (
                "near its time limit"
                if replica.id in expiring
                else "of an older generation"
                if replica.generation != service.generation
                else "not needed"
            )
            self._event(session, service, f"replica job {replica.job_id} drained: {why}", now)
        if service.desired != desired:
            self._event(session, service, f"wanted replicas: {service.desired} -> {desired}", now)
        service.desired = desired
        if plan.start and service.retry_at is not None and now < service.retry_at:
            return False  # crash loop: the reason says when the next replica starts
        for _ in range(plan.start):
            try:
                with session.begin_nested():
                    replica = self._start_replica(session, service, now)
            except VirtuaiError as error:
                why = f"cannot start a replica: {error.message}"
                if service.reason != why:  # said once, not every pass it stays true
                    self._event(session, service, why, now)
                service.reason = why
                log.warning("service %s: %s", service.name, service.reason)
                return False
            self._event(
                session,
                service,
                f"replica job {replica.job_id} started (generation {replica.generation})",
                now,
            )
            if service.reason.startswith("cannot start"):
                service.reason = ""
        return plan.start > 0

    def _ended(self, service: ServiceRow, replica: ServiceReplicaRow, now: dt.datetime) -> str:
        """Why the service lost ``replica`` (which ended on its own), counting the replicas in
        a row that ended before they were ready: each delays the next start more."""
        job = replica.job
        what = f"replica job {job.id} ended ({job.state}: {job.reason})"
        if replica.ready_at is not None or job.cancel_requested_at is not None:
            return f"{what}; replaced"
        crashes = service.crashes + 1
        delay = crash_backoff_s(
            crashes, self._config.crash_backoff_s, self._config.crash_backoff_max_s
        )
        # On the row: a new leader, or this server restarted, keeps waiting it out.
        service.crashes, service.crash_generation = crashes, service.generation
        service.retry_at = now + dt.timedelta(seconds=delay)
        return (
            f"replica job {job.id} {NOT_READY_END} ({job.state}: {job.reason}; "
            f"its output: `virtuai logs {job.id}`); "
            f"{crashes} in a row, the next one starts in {format_duration(delay)}"
        )

    @staticmethod
    def _event(session: Session, service: ServiceRow, message: str, now: dt.datetime) -> None:
        record_service_event(session, service.id, message, now)

    def _tell(self, session: Session, service: ServiceRow, reason: str, now: dt.datetime) -> None:
        """``reason`` becomes the service's, in the log and its history too."""
        service.reason = reason
        log.info("service %s: %s", service.name, reason)
        self._event(session, service, reason, now)

    def _forget_crashes(self, service: ServiceRow) -> None:
        if service.crashes or service.retry_at is not None:
            service.crashes, service.crash_generation, service.retry_at = 0, None, None
        if NOT_READY_END in service.reason:
            service.reason = ""  # over: a later cold start is held again, not refused

    def _expiring(self, spec: ServiceSpec, replica: ServiceReplicaRow, now: dt.datetime) -> bool:
        """Whether ``replica`` is so near its time limit that its replacement must start."""
        job = replica.job
        if job.started_at is None or job.state != JobState.RUNNING.value or not job.walltime_s:
            return False
        started, ready_at = job.started_at, replica.ready_at
        startup = 0.0 if ready_at is None else max(0.0, (ready_at - started).total_seconds())
        margin = renewal_margin_s(
            time_s=job.walltime_s,
            startup_s=startup,
            interval_s=spec.readiness.interval_s,
            drain_s=self._config.drain_s,
            floor_s=self._config.renew_before_s,
        )
        left = job.walltime_s - (now - started).total_seconds()
        return left < margin

    def _record_probe(
        self,
        session: Session,
        service: ServiceRow,
        spec: ServiceSpec,
        replica: ServiceReplicaRow,
        result: tuple[bool, str] | None,
        now: dt.datetime,
    ) -> None:
        job = replica.job
        if job.state != JobState.RUNNING.value or job.cancel_requested_at is not None:
            replica.ready = False
            return
        if result is not None:
            ok, message = result
            replica.last_probe_at = now
            replica.probe_message = message
            if message.endswith(FOREIGN):
                # Never the replica's answer: out of the route at once, and replaced (an
                # `auto` replica gets another port; a fixed one waits for its port).
                replica.ready = False
                self._restart(session, service, replica, message, now)
                return
            if ok:
                replica.probe_failures = 0
                if not replica.ready:
                    replica.ready = True
                    replica.ready_at = now
                    self._event(session, service, f"replica job {replica.job_id} ready", now)
                return
            replica.probe_failures += 1
            if replica.ready and replica.probe_failures >= spec.readiness.failure_threshold:
                replica.ready = False
                self._restart(
                    session,
                    service,
                    replica,
                    f"readiness failed {replica.probe_failures} times ({message})",
                    now,
                )
                return
        if (
            not replica.ready
            and replica.ready_at is None
            and job.started_at is not None
            and (now - job.started_at).total_seconds() > spec.readiness.start_timeout_s
        ):
            limit = format_duration(spec.readiness.start_timeout_s)
            self._restart(
                session,
                service,
                replica,
                f"not ready {limit} after it started ({replica.probe_message})",
                now,
            )

    def _restart(
        self,
        session: Session,
        service: ServiceRow,
        replica: ServiceReplicaRow,
        why: str,
        now: dt.datetime,
    ) -> None:
        replica.ready = False
        replica.draining_at = now
        self._tell(session, service, f"replica job {replica.job_id} restarted: {why}", now)
        replica.probe_message = f"restarted: {why}"
        if replica.ready_at is None:
            # Never in the proxy's route: stopped at once.  A replica that was ready is
            # drained first (stopped drain_s later, see _stop_if_drained): the proxy's
            # cached routes may still send it a request meanwhile, and it may still answer.
            request_cancel(session, replica.job, now=now, actor="services", why=f"restarted: {why}")

    def _drain(self, session: Session, replica: ServiceReplicaRow, now: dt.datetime) -> None:
        replica.draining_at = now
        if replica.ready_at is None:
            # Never in the proxy's route: nothing to wait for.
            request_cancel(session, replica.job, now=now, actor="services", why="not needed")
        replica.ready = False

    def _stop_if_drained(
        self, session: Session, replica: ServiceReplicaRow, now: dt.datetime
    ) -> None:
        if replica.draining_at is None or replica.job.cancel_requested_at is not None:
            return
        if (now - replica.draining_at).total_seconds() >= self._config.drain_s:
            why = replica.probe_message if replica.probe_message.startswith("restarted") else ""
            request_cancel(session, replica.job, now=now, actor="services", why=why or "drained")

    def _desired(
        self,
        service: ServiceRow,
        spec: ServiceSpec,
        live: list[ServiceReplicaRow],
        now: dt.datetime,
    ) -> int:
        # The proxies' counts are by service id, and before migration 0031 SQLite gave a
        # deleted service's id to the next one created: requests older than this service
        # were another's (its counters, in memory and in other servers' rows, outlive it).
        # Ids are never reused now (0031); this stays as a second guard, one comparison.
        traffic_last = self._traffic_last(service.id)
        ours = traffic_last is not None and traffic_last >= service.created_at.timestamp()
        stamps = [
            t
            for t in (
                traffic_last if ours else None,
                None if service.last_request_at is None else service.last_request_at.timestamp(),
                None if service.demand_at is None else service.demand_at.timestamp(),
            )
            if t is not None
        ]
        last = max(stamps) if stamps else None
        if last is not None and (
            service.last_request_at is None or last - service.last_request_at.timestamp() >= 1.0
        ):
            service.last_request_at = dt.datetime.fromtimestamp(last, dt.UTC)
        idle = spec.idle_timeout_s or self._config.idle_timeout_s
        desired = desired_replicas(
            spec,
            now=now.timestamp(),
            last_request=last,
            rate=self._traffic_rate(service.id) if ours else 0.0,
            idle_timeout_s=idle,
        )
        current = [r for r in live if r.draining_at is None and r.generation == service.generation]
        if 0 < desired < len(current):
            # Down one replica at a time, at most once per delay: a dip in the rate does not
            # throw away warm replicas (scaling to zero after the idle timeout is at once).
            since = now.timestamp() - self._last_down.get(service.id, 0.0)
            if since < self._config.scale_down_delay_s:
                return len(current)
            self._last_down[service.id] = now.timestamp()
            return len(current) - 1
        return desired
