"""Inference services, the pure part: the spec, how many replicas, which to start or drain.

A service (``type: service`` in ``virtuai apply -f``) is a set of replicas behind
the proxy at ``/svc/<tenant>/<name>/``.  Each replica is a job of kind
``service`` (one task), so it is admitted, placed, accounted and preempted as
jobs are.  A replica listens on ``$PORT`` (``$HOST`` is the address to bind):
several replicas may share a machine, so the platform picks the port (the job's
rendezvous port), as Heroku, Cloud Run and dstack do.  A fixed ``port: N`` is
honoured too (Nomad's static port, Kubernetes' ``hostPort``): every replica's
``$PORT`` is N, and the scheduler puts at most one holder of N on a node.

The control loop (``control.serving``) asks two questions of this module every
pass, both pure so that they are tested exhaustively:

* :func:`desired_replicas`: how many replicas the service should have now
  (its ``min``; at least one while it was asked something within its idle
  timeout; ``ceil(rate / target_rps)`` when a target rate is given; never above
  ``max``);
* :func:`plan_replicas`: given the replicas that exist, which to start and which
  to drain.  A changed spec rolls one replica at a time: a new one is started,
  and an old one is drained only once a new one is ready, so the number of ready
  replicas never drops below what is wanted.  A replica near its time limit
  (:func:`renewal_margin_s`) is replaced the same way, before the limit ends it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KIND = "service"
PORT_ENV = "PORT"
HOST_ENV = "HOST"
AUTH_TENANT = "tenant"
AUTH_PUBLIC = "public"
AUTH_MODES = (AUTH_TENANT, AUTH_PUBLIC)

# The replica's command runs with $PORT set to the port the platform chose for it.
_PORT_SHIM = 'export PORT="$MASTER_PORT"; exec "$@"'


@dataclass(frozen=True, slots=True)
class Readiness:
    """An HTTP GET of ``path`` on the replica's port; 2xx or 3xx is ready."""

    path: str = "/"
    interval_s: float = 2.0
    timeout_s: float = 1.0
    failure_threshold: int = 3  # consecutive failures of a ready replica: restart it
    start_timeout_s: int = 300  # a replica not ready this long after it started: restart it


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    command: tuple[str, ...]
    cpu_milli: int
    memory: int
    gpu: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    environment: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    target_rps: float | None = None
    readiness: Readiness = field(default_factory=Readiness)
    auth: str = AUTH_TENANT
    idle_timeout_s: int | None = None  # None: the server's services.idle_timeout_s
    time_s: int | None = None  # a replica's time limit; None: the longest allowed
    priority: str | None = None
    # A fixed port (``port: N``): every replica's $PORT, one replica per node; None: the
    # platform picks each replica's port (``port: auto``, preferred).
    port: int | None = None

    def to_json(self) -> dict[str, object]:
        # ``port`` only when fixed: the template digest of every `auto` service stays the
        # same as before fixed ports existed (no roll on upgrade).
        return ({"port": self.port} if self.port is not None else {}) | {
            "command": list(self.command),
            "cpu_milli": self.cpu_milli,
            "memory": self.memory,
            "gpu": self.gpu,
            "env": dict(self.env),
            "environment": self.environment,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_rps": self.target_rps,
            "readiness": {
                "path": self.readiness.path,
                "interval_s": self.readiness.interval_s,
                "timeout_s": self.readiness.timeout_s,
                "failure_threshold": self.readiness.failure_threshold,
                "start_timeout_s": self.readiness.start_timeout_s,
            },
            "auth": self.auth,
            "idle_timeout_s": self.idle_timeout_s,
            "time_s": self.time_s,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceSpec:
        r = data.get("readiness")
        readiness = Readiness(**r) if isinstance(r, dict) else Readiness()
        values = {k: v for k, v in data.items() if k != "readiness"}
        values["command"] = tuple(values.get("command") or ())
        values["env"] = dict(values.get("env") or {})
        return cls(readiness=readiness, **values)

    def template_digest(self) -> str:
        """What a replica is made of: a change of it rolls the replicas.  Scaling, access and
        idleness are not in it (they change without restarting anything)."""
        template = self.to_json()
        for key in ("min_replicas", "max_replicas", "target_rps", "auth", "idle_timeout_s"):
            template.pop(key)
        return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PortRules:
    """Which fixed ports (``port: N``) a service may take on the platform's machines.

    Refused: the kernel's ephemeral range (``net.ipv4.ip_local_port_range``: any
    outgoing connection or ``bind(0)``, a gang's rendezvous included, may hold such a
    port at any moment), the range the platform picks replicas' ``$PORT`` from (an
    `auto` replica may hold it), and the server's own ports."""

    ephemeral: tuple[int, int] = (32768, 60999)
    replicas: tuple[int, int] = (30000, 32767)
    server: frozenset[int] = frozenset()

    def problem(self, port: int) -> str | None:
        """Why ``port`` cannot be a service's fixed port; ``None``: it can."""
        low, high = self.ephemeral
        if low <= port <= high:
            return (
                f"{port} is in the kernel's ephemeral range ({low}-{high}), where any "
                "connection may hold it; choose another port, or `auto` (preferred)"
            )
        low, high = self.replicas
        if low <= port <= high:
            return (
                f"{port} is in the range the platform gives replicas' $PORT from "
                f"({low}-{high}); choose another port, or `auto` (preferred)"
            )
        if port in self.server:
            return f"{port} is a port of the virtuai server itself; choose another port"
        return None


def replica_command(command: Sequence[str]) -> tuple[str, ...]:
    """The command a replica's task runs: ``command`` with ``$PORT`` set."""
    return ("/bin/sh", "-c", _PORT_SHIM, "virtuai-service", *command)


def base_path(tenant: str, name: str) -> str:
    return f"/svc/{tenant}/{name}/"


def desired_replicas(
    spec: ServiceSpec,
    *,
    now: float,
    last_request: float | None,
    rate: float,
    idle_timeout_s: float,
) -> int:
    """How many replicas ``spec`` wants now.  ``last_request``: epoch seconds of the last
    request (a held cold-start request included); ``rate``: requests per second lately."""
    wanted = spec.min_replicas
    recent = last_request is not None and now - last_request < idle_timeout_s
    if recent:
        wanted = max(wanted, 1)
    if spec.target_rps and rate > 0:
        wanted = max(wanted, math.ceil(rate / spec.target_rps))
    return max(0, min(wanted, spec.max_replicas))


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the planner sees it.  ``order``: creation order (larger is newer)."""

    id: int
    generation: int
    ready: bool
    draining: bool = False
    order: int = 0
    # Pending because its fixed port is taken on every node it may use (by the replicas
    # it is to replace, mostly): a roll cannot add one before it takes one away.
    waits_for_port: bool = False
    # Within ``renewal_margin_s`` of its time limit: replaced as an old generation is.
    expiring: bool = False


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    start: int = 0  # new replicas of the current generation to start
    drain: tuple[int, ...] = ()  # replicas to take out of the proxy, then stop


def renewal_margin_s(
    *, time_s: float, startup_s: float, interval_s: float, drain_s: float, floor_s: float
) -> float:
    """How long before its time limit (``time_s`` after it started) a replica's replacement
    is started.  The replacement must be ready, and the old replica then drained (out of
    every proxy's route for ``drain_s``), before the limit ends the old one: so at least
    ``drain_s`` plus twice the replica's own start-to-ready time (``startup_s``: the
    replacement's is alike) plus two readiness probes, and never below ``floor_s`` (the
    setting ``services.renew_before_s``: placement and a slower start).  At most half
    the time limit: a short-lived replica serves half its time before it is replaced,
    rather than being replaced as soon as it is ready."""
    wanted = max(floor_s, drain_s + 2 * startup_s + 2 * interval_s)
    return min(wanted, time_s / 2)


def plan_replicas(replicas: Sequence[ReplicaView], generation: int, desired: int) -> ReplicaPlan:
    """Which replicas to start and drain so that ``desired`` replicas of ``generation``
    serve, never with fewer ready replicas than wanted while an old generation rolls.
    A replica near its time limit (``expiring``) is one of the old: its replacement is
    started at once (one per expiring replica: each has a deadline), and it is drained
    once a replacement is ready."""
    active = [r for r in replicas if not r.draining]
    new = [r for r in active if r.generation == generation and not r.expiring]
    old = [r for r in active if r.generation != generation or r.expiring]
    drain: list[ReplicaView] = []
    if desired <= 0:
        return ReplicaPlan(0, tuple(r.id for r in active))
    # Old replicas that are not ready serve nothing: no reason to keep them.
    drain.extend(r for r in old if not r.ready)
    # The expiring leave first: the others could serve on.
    old_ready = sorted((r for r in old if r.ready), key=lambda r: (not r.expiring, r.order))
    # Surplus of the current generation: the not-ready first, then the newest.
    surplus = len(new) - desired
    if surplus > 0:
        by_use = sorted(new, key=lambda r: (r.ready, -r.order))
        drain.extend(by_use[:surplus])
        new = by_use[surplus:]
    new_ready = [r for r in new if r.ready]
    start = 0
    if old_ready:
        # Rolling: one new replica at a time, and an old one leaves only when a new one
        # is ready to take its place.
        excess = len(old_ready) + len(new_ready) - desired
        if excess > 0:
            drain.extend(old_ready[:excess])
        # One new replica at a time for a changed spec (maxSurge 1); one per expiring
        # replica, as each must be replaced before its own limit.
        in_flight = len(new) - len(new_ready)
        wave = max(1, sum(1 for r in old_ready if r.expiring))
        start = max(0, min(desired - len(new), wave - in_flight))
        stopping = any(r.draining and (r.generation != generation or r.expiring) for r in replicas)
        if any(r.waits_for_port for r in new) and not stopping and excess <= 0:
            # A fixed port on nodes all taken by old replicas: one old replica leaves
            # first (Kubernetes' maxUnavailable instead of maxSurge), one at a time.
            drain.append(old_ready[0])
    else:
        start = max(0, desired - len(new))
    return ReplicaPlan(start, tuple(r.id for r in drain))


# In a service's reason while its replicas end before they are ready (a crash loop): the
# proxy then answers a held request at once, with the reason, instead of holding it for
# the whole cold-start timeout while the next replica waits out its back-off.
NOT_READY_END = "ended before it was ready"


def crash_backoff_s(crashes: int, base_s: float, max_s: float) -> float:
    """How long to wait before the next replica after ``crashes`` replicas in a row ended
    before they were ready (a wrong command, a missing file): doubling from ``base_s`` up
    to ``max_s``, as Kubernetes' CrashLoopBackOff, so that a broken service does not start
    a job every pass of the reconciler.  ``0`` for no crash."""
    if crashes <= 0:
        return 0.0
    return float(min(max_s, base_s * 2.0 ** min(crashes - 1, 32)))
