"""The proxy's routing table: which workload a path belongs to, who may reach it, where it is.

A path's first two segments after the kind name a route:

* ``/user/<user>/<name>/...``: a notebook, reachable by its owner only;
* ``/svc/<tenant>/<name>/...``: a service (``proxy.services``: its tenant's members,
  or anyone with ``auth: public``), balanced round robin over its ready replicas; the
  prefix is stripped (a replica serves at its root).

Routes are read from the database (``control.notebooks.notebook_upstream``)
and kept for ``ttl_s`` (2 s), so a busy notebook costs no query per request,
while a stopped or moved one is forgotten quickly; a restarted server needs
nothing but the database.  An entry past its ``ttl_s`` but younger than
``stale_s`` (10 s) is still used while one refresh runs in the background, so
no request waits for the database on a busy route (a refresh that finds the
route gone drops it; a request whose upstream refuses drops it at once).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.notebooks import Upstream, notebook_upstream
from virtuai.domain.notebooks import KIND as NOTEBOOK
from virtuai.domain.workload import FINISHED_STATES
from virtuai.store.db import read_session
from virtuai.store.models import JobRow, UserRow

_SEGMENT = r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?"
PATH_RE = re.compile(rf"^/(user|svc)/({_SEGMENT})/({_SEGMENT})(/.*)?$")
PREFIXES = ("/user/", "/svc/")
_FINISHED = frozenset(s.value for s in FINISHED_STATES)


class Access(enum.Enum):
    OWNER = "owner"  # the user who started it (notebooks)
    TENANT = "tenant"  # any member of its tenant (services, auth: tenant)
    PUBLIC = "public"  # anyone, signed in or not (services, auth: public)


@dataclass(frozen=True, slots=True)
class Target:
    """What a path asks for: ``/user/alice/lab/...`` -> ``("user", "alice", "lab")``."""

    kind: str
    owner: str  # a user (notebooks) or a tenant (services)
    name: str
    rest: str  # what follows the prefix, "" when the trailing slash is missing

    @property
    def prefix(self) -> str:
        return f"/{self.kind}/{self.owner}/{self.name}/"


def parse_target(path: str) -> Target | None:
    match = PATH_RE.match(path)
    if match is None:
        return None
    return Target(match.group(1), match.group(2), match.group(4), match.group(6) or "")


@dataclass(frozen=True, slots=True)
class Route:
    job_id: int
    access: Access
    owner_user_id: int | None  # Access.OWNER
    tenant: str
    state: str
    reason: str
    upstreams: tuple[Upstream, ...] = ()  # empty: not reachable yet (see state, reason)
    _turn: itertools.count[int] = field(default_factory=itertools.count, compare=False)
    # Services: which one (a cold start holds the request), how much of the path the
    # upstream does not see, and what counts its requests (the autoscaler's rate).
    service_id: int | None = None
    strip: int = 0
    meter: Callable[[], None] | None = field(default=None, compare=False)
    # When each upstream's readiness was last probed (epoch seconds; services): a replica
    # marked suspect after that is skipped (``Suspects``).
    probed_at: tuple[float, ...] = ()

    def pick(
        self,
        suspects: Suspects | None = None,
        *,
        count: bool = True,
        only: Callable[[Upstream], bool] | None = None,
    ) -> Upstream | None:
        """The next upstream, round robin (one for a notebook), skipping what ``suspects``
        says failed since its last probe, and what ``only`` refuses; ``None`` if there is
        none.  ``count=False``: a retry of a request already counted."""
        if count and self.meter is not None:
            self.meter()
        upstreams = self.upstreams
        if not upstreams:
            return None
        turn = next(self._turn)
        if not suspects and only is None:
            return upstreams[turn % len(upstreams)]
        for i in range(len(upstreams)):
            index = (turn + i) % len(upstreams)
            if only is not None and not only(upstreams[index]):
                continue
            if not (suspects and suspects.suspect(self, index)):
                return upstreams[index]
        return None


class Suspects:
    """Upstreams a request could not reach, skipped by ``Route.pick`` until their replica's
    next readiness probe (the reconciler's, ``Route.probed_at``) says again; a notebook
    (never probed) is not skipped.  Event loop only: no locks."""

    def __init__(self) -> None:
        self._marked: dict[tuple[str, int], float] = {}

    def __bool__(self) -> bool:
        return bool(self._marked)

    def mark(self, upstream: Upstream, now: float) -> None:
        if len(self._marked) > 10_000:
            self._marked.clear()
        self._marked[(upstream.host, upstream.port)] = now

    def suspect(self, route: Route, index: int) -> bool:
        upstream = route.upstreams[index]
        key = (upstream.host, upstream.port)
        marked = self._marked.get(key)
        if marked is None or index >= len(route.probed_at):
            return False
        if route.probed_at[index] > marked:
            del self._marked[key]  # probed since: the probe decides again
            return False
        return True

    def usable(self, route: Route) -> bool:
        """Whether ``route`` has an upstream that is not suspect."""
        return any(not self.suspect(route, i) for i in range(len(route.upstreams)))


Resolver = Callable[[Session, Target, bytes], Route | None]


def resolve_notebook(session: Session, target: Target, key: bytes) -> Route | None:
    job = session.scalar(
        select(JobRow)
        .join(UserRow, UserRow.id == JobRow.user_id)
        .where(
            UserRow.name == target.owner,
            JobRow.kind == NOTEBOOK,
            JobRow.name == target.name,
            JobRow.state.not_in(_FINISHED),
        )
        .order_by(JobRow.id.desc())
        .limit(1)
    )
    if job is None:
        return None
    upstream = notebook_upstream(session, job, key)
    return Route(
        job_id=job.id,
        access=Access.OWNER,
        owner_user_id=job.user_id,
        tenant=job.tenant.name,
        state=job.state,
        reason=job.reason,
        upstreams=() if upstream is None else (upstream,),
    )


class RouteTable:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        key: bytes,
        *,
        ttl_s: float = 2.0,
        stale_s: float = 10.0,
        resolvers: dict[str, Resolver] | None = None,
    ) -> None:
        self._sessions = sessions
        self._key = key
        self._ttl_s = ttl_s
        self._stale_s = stale_s
        self._resolvers = resolvers if resolvers is not None else {"user": resolve_notebook}
        self._cache: dict[tuple[str, str, str], tuple[float, Route | None]] = {}

    def cached(self, target: Target) -> tuple[bool, Route | None, bool]:
        """``(hit, route, refresh)``: a usable entry, and whether it should be read again
        (no I/O: called on the event loop)."""
        hit = self._cache.get((target.kind, target.owner, target.name))
        if hit is None:
            return False, None, False
        age = time.monotonic() - (hit[0] - self._ttl_s)
        if age > self._stale_s:
            return False, None, False
        return True, hit[1], age > self._ttl_s

    def lookup(self, target: Target) -> Route | None:
        """Read the route from the database (blocking: run it on a worker thread)."""
        resolver = self._resolvers.get(target.kind)
        route = None
        if resolver is not None:
            with read_session(self._sessions) as session:
                route = resolver(session, target, self._key)
                session.rollback()
        # Only reachable routes are kept: one that is starting is asked again next time.
        if route is None or not route.upstreams:
            self.forget(target)
        else:
            key = (target.kind, target.owner, target.name)
            previous = self._cache.get(key)
            if previous is not None and previous[1] is not None:
                # The round robin goes on where it was: a refresh every ``ttl_s`` must not
                # send the first request after it to the first replica again.
                route = dataclasses.replace(route, _turn=previous[1]._turn)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + self._ttl_s, route)
        return route

    def forget(self, target: Target) -> None:
        self._cache.pop((target.kind, target.owner, target.name), None)
