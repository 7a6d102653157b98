"""What every submit reads and hardly anything changes, kept between transactions.

A submit checks its tenant (exists, enabled), the nodes its targeting allows and
whether the job can ever run (nodes and quotas: ``planning.capacity_snapshot``).
Read per transaction, these three reads were about a third of the writer's CPU per
submit from a client in sequence, where every submit is a transaction of its own
(docs/benchmarks.md, "The submit's CPU").  Here they are kept as a ``SubmitBasis``
for at most ``ttl_s`` seconds.  It stays correct as the token cache does
(``services.tokencache``):

- any change to tenants, their quotas or nodes made through a SQLAlchemy session of
  this process (ORM changes and ``update``/``delete``/``insert`` statements) bumps a
  generation when it is flushed and again when it commits; a basis read under an
  older generation is not used, and one read while a change was committing is not
  kept, so a disabled tenant or a new quota is seen by the very next submit here;
- the API worker processes of one server share that generation through a file of
  the state directory (``share``), as they share the token cache's;
- a change made by another server on the same database is seen after at most
  ``ttl_s`` seconds (as a revoked token is); and a submit the kept basis would refuse
  (a tenant not found or disabled, a job that could never run) is checked again on a
  basis read afresh, so that only an acceptance may rest on the last second's view.

What changes all the time and decides nothing here is left out, or the basis would
never live: a node's heartbeat (four times a second), a tenant's fair-share usage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from virtuai.scheduler.snapshot import Snapshot
from virtuai.services.generations import ChangeGeneration
from virtuai.services.planning import SchedulingRules, capacity_snapshot
from virtuai.store.models import NodeRow, TenantQuotaRow, TenantRow

DEFAULT_TTL_S = 1.0

# The tables a basis is read from, and the columns of each whose change does not count.
_IGNORED: dict[str, frozenset[str]] = {
    str(NodeRow.__tablename__): frozenset({"heartbeat_at", "heartbeat_seq"}),
    str(TenantRow.__tablename__): frozenset(
        {"usage_cpu_milli_s", "usage_memory_s", "usage_gpu_s", "usage_as_of"}
    ),
    str(TenantQuotaRow.__tablename__): frozenset(),
}


@dataclass(frozen=True, slots=True)
class TenantRef:
    """What a submit needs of its tenant's row."""

    id: int
    name: str
    disabled_at: dt.datetime | None
    deleted_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class NodeRef:
    """What targeting (``store.inventory.allowed_nodes``) reads of a node's row."""

    name: str
    node_class: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SubmitBasis:
    tenants: Mapping[str, TenantRef]  # by name, deleted ones included (as rows are)
    nodes: tuple[NodeRef, ...]
    capacity: Snapshot  # as of ``capacity.now``: ``at(now)`` moves it

    def at(self, now: dt.datetime) -> Snapshot:
        return dataclasses.replace(self.capacity, now=now.timestamp())


def read_basis(session: Session, rules: SchedulingRules, now: dt.datetime) -> SubmitBasis:
    node_rows = list(session.scalars(select(NodeRow)))
    tenants = session.execute(
        select(TenantRow.id, TenantRow.name, TenantRow.disabled_at, TenantRow.deleted_at)
    ).all()
    return SubmitBasis(
        tenants={row.name: TenantRef(*row) for row in tenants},
        nodes=tuple(NodeRef(r.name, r.node_class, dict(r.labels or {})) for r in node_rows),
        capacity=capacity_snapshot(session, rules, now, node_rows),
    )


def _table_of(obj: Any) -> str | None:
    name = getattr(obj, "__tablename__", None)
    return name if name in _IGNORED else None


def _object_changes(obj: Any, deleted_or_new: bool) -> bool:
    table = _table_of(obj)
    if table is None:
        return False
    if deleted_or_new:
        return True
    ignored = _IGNORED[table]
    return any(
        attr.key not in ignored and attr.history.has_changes() for attr in inspect(obj).attrs
    )


def statement_changes(statement: Any) -> bool:
    """Whether an ``insert``/``update``/``delete`` on a watched table may change a basis.

    An update that sets only ignored columns (a heartbeat) does not; anything this
    cannot tell (values it does not see as a plain mapping) counts as a change."""
    table = getattr(getattr(statement, "table", None), "name", None)
    if table not in _IGNORED:
        return False
    if not getattr(statement, "is_update", False) or getattr(statement, "_multi_values", None):
        return True
    values = getattr(statement, "_values", None)
    if not values:
        return True
    keys = {getattr(key, "key", key) for key in values}
    return not keys <= _IGNORED[table]


# Bumped by every flush and commit that changes what a basis holds; shared by the
# processes of a server once ``share`` was called (as ``tokencache.GENERATION``).
GENERATION = ChangeGeneration("submit_basis", _object_changes, statement_changes)


class SubmitBasisCache:
    """One ``SubmitBasis`` for one set of scheduling rules, read again when it is older
    than ``ttl_s`` or something it holds changed (see the module's docstring)."""

    def __init__(
        self,
        rules: SchedulingRules,
        ttl_s: float = DEFAULT_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        GENERATION.install()
        self._rules = rules
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        # (basis, the generation it was read under, when it expires); one tuple, swapped
        # whole, so that threads read it without a lock.
        self._kept: tuple[SubmitBasis, int, float] | None = None

    def get(self, session: Session, now: dt.datetime) -> SubmitBasis:
        """The basis, read in ``session``'s transaction when the kept one cannot serve."""
        generation = GENERATION.value  # before the read: a change during it is seen
        kept = self._kept
        if kept is not None and kept[1] == generation and kept[2] > self._monotonic():
            return kept[0]
        return self._read(session, now, generation)

    def refresh(self, session: Session, now: dt.datetime) -> SubmitBasis:
        """Read afresh (and keep): before a refusal, which must not rest on a kept basis
        that misses another server's change."""
        return self._read(session, now, GENERATION.value)

    def _read(self, session: Session, now: dt.datetime, generation: int) -> SubmitBasis:
        basis = read_basis(session, self._rules, now)
        if self._ttl_s > 0 and GENERATION.value == generation:
            self._kept = (basis, generation, self._monotonic() + self._ttl_s)
        return basis

    def forget(self) -> None:
        self._kept = None
