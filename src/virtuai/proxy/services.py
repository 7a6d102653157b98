"""Services in the proxy: the route of ``/svc/<tenant>/<name>/``, its traffic, cold starts.

* :class:`ServiceResolver` reads a service's route: its *ready* replicas that are
  not draining (``service_replicas``, kept by ``control.serving``), balanced
  round robin by ``Route.pick``; access ``TENANT`` (its tenant's members) or
  ``PUBLIC`` (``auth: public``); the prefix is stripped, so a replica serves
  ``/svc/physics/iris/predict`` at ``/predict``.
* :class:`Traffic` counts requests per service (each ``Route.pick``): when the
  last one came and the recent rate, which the reconciler scales on.
* :class:`ServiceHolds`: a request to a service with no ready replica (scaled to
  zero, or starting) records the demand in the database (``services.demand_at``,
  which makes the reconciler want a replica), wakes the loops, and is *held*
  until a replica is ready or ``cold_start_timeout_s`` passes (then 503 with
  ``Retry-After``).  Concurrent held requests of one service share one waiter.
  A request whose every replica failed it (crashed, ``Suspects``) is held the same
  way, until a replica that did not fail is ready.  While replicas end before they are
  ready (a crash loop, ``domain.services.NOT_READY_END``), it is answered 503 at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.notebooks import Upstream, notebook_upstream
from virtuai.domain.clock import Clock
from virtuai.domain.services import AUTH_PUBLIC, NOT_READY_END, ServiceSpec
from virtuai.domain.workload import JobState
from virtuai.proxy.routes import Access, Route, RouteTable, Suspects, Target
from virtuai.store.db import transaction
from virtuai.store.models import JobRow, ServiceReplicaRow, ServiceRow, TenantRow

_BUCKETS = 60  # one-second buckets of request counts


class Traffic:
    """Requests per service, by second, over the last minute (event loop only: no locks)."""

    def __init__(self, window_s: int = 30) -> None:
        self._window_s = min(window_s, _BUCKETS)
        self._last: dict[int, float] = {}
        self._counts: dict[int, list[int]] = {}
        self._seconds: dict[int, list[int]] = {}

    def hit(self, service_id: int) -> None:
        now = time.time()
        self._last[service_id] = now
        second = int(now)
        counts = self._counts.get(service_id)
        if counts is None:
            counts = self._counts[service_id] = [0] * _BUCKETS
            self._seconds[service_id] = [0] * _BUCKETS
        slot = second % _BUCKETS
        seconds = self._seconds[service_id]
        if seconds[slot] != second:
            seconds[slot] = second
            counts[slot] = 0
        counts[slot] += 1

    def last(self, service_id: int) -> float | None:
        return self._last.get(service_id)

    def services(self) -> list[int]:
        """The services this proxy has counted requests of (read from another thread: a
        copy of the keys, which the GIL makes atomic)."""
        return list(self._last)

    def waiting(self, service_id: int) -> None:
        """A request is held for the service: it is not idle (its rate is not raised)."""
        self._last[service_id] = time.time()

    def rate(self, service_id: int) -> float:
        """Requests per second over the window (the current, partial second excluded)."""
        counts = self._counts.get(service_id)
        if counts is None:
            return 0.0
        now = int(time.time())
        seconds = self._seconds[service_id]
        total = sum(
            c for c, s in zip(counts, seconds, strict=True) if now - self._window_s <= s < now
        )
        return total / self._window_s


class ServiceResolver:
    """The route of a service (``RouteTable``'s resolver of the kind ``svc``)."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def __call__(self, session: Session, target: Target, key: bytes) -> Route | None:
        service = session.scalar(
            select(ServiceRow)
            .join(TenantRow, TenantRow.id == ServiceRow.tenant_id)
            .where(TenantRow.name == target.owner, ServiceRow.name == target.name)
        )
        if service is None or service.state != "active":
            return None
        rows = session.execute(
            select(ServiceReplicaRow, JobRow)
            .join(JobRow, JobRow.id == ServiceReplicaRow.job_id)
            .where(
                ServiceReplicaRow.service_id == service.id,
                ServiceReplicaRow.ready.is_(True),
                ServiceReplicaRow.draining_at.is_(None),
                JobRow.state == JobState.RUNNING.value,
                JobRow.cancel_requested_at.is_(None),
            )
            .order_by(ServiceReplicaRow.id)
        ).all()
        upstreams: list[Upstream] = []
        probed_at: list[float] = []
        for replica, job in rows:
            upstream = notebook_upstream(session, job, key)
            if upstream is not None:
                upstreams.append(upstream)
                probed = replica.last_probe_at
                probed_at.append(probed.timestamp() if probed is not None else 0.0)
        spec = ServiceSpec.from_json(service.spec)
        service_id = service.id
        traffic = self._traffic
        return Route(
            job_id=rows[0][1].id if rows else 0,
            access=Access.PUBLIC if spec.auth == AUTH_PUBLIC else Access.TENANT,
            owner_user_id=None,
            tenant=target.owner,
            state="ready" if upstreams else "starting",
            reason=service.reason
            or ("no replica is ready yet" if service.desired else "scaled to zero"),
            upstreams=tuple(upstreams),
            service_id=service_id,
            strip=len(target.prefix) - 1,
            meter=lambda: traffic.hit(service_id),
            probed_at=tuple(probed_at),
        )


class ServiceHolds:
    """Hold requests to a service without a ready replica until one is (a cold start)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        routes: RouteTable,
        *,
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
        wake: Callable[[], None] = lambda: None,
        suspects: Suspects | None = None,
        waiting: Callable[[int], None] = lambda _service_id: None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._routes = routes
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._wake = wake
        # A replica that failed a request is not one to wait for (``Suspects``).
        self._suspects = suspects
        # Said while a request waits: a start longer than the idle timeout must not scale
        # the service back to zero under the request that woke it.
        self._waiting = waiting
        self._waits: dict[Target, asyncio.Future[Route]] = {}

    async def hold(self, target: Target, route: Route) -> Route:
        """The route once it has a ready replica, or as it is after the timeout."""
        waiting = self._waits.get(target)
        if waiting is None:
            waiting = asyncio.ensure_future(self._wait(target, route))
            self._waits[target] = waiting
            waiting.add_done_callback(lambda _f: self._waits.pop(target, None))
        return await asyncio.shield(waiting)

    async def _wait(self, target: Target, route: Route) -> Route:
        assert route.service_id is not None
        await anyio.to_thread.run_sync(self._demand, route.service_id)
        self._wake()
        deadline = time.monotonic() + self._timeout_s
        latest = route
        if NOT_READY_END in route.reason:
            return route  # a crash loop: its reason now, not a 503 after the whole timeout
        while time.monotonic() < deadline:
            self._waiting(route.service_id)
            await asyncio.sleep(self._poll_s)
            found = await anyio.to_thread.run_sync(self._routes.lookup, target)
            if found is None:
                return latest  # deleted meanwhile: the caller answers as it would have
            latest = found
            if found.upstreams and (not self._suspects or self._suspects.usable(found)):
                return found
            if not found.upstreams and NOT_READY_END in found.reason:
                return found
        return latest

    def _demand(self, service_id: int) -> None:
        with transaction(self._sessions) as session:
            service = session.get(ServiceRow, service_id)
            if service is not None:
                service.demand_at = self._clock.now()
