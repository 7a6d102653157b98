"""The scheduling lease and node heartbeats, as rows.

Liveness is judged by counters, not timestamps: the holder bumps
``renew_seq``, a node bumps ``heartbeat_seq``, and whoever judges (a
standby, the leader) notes *by its own monotonic clock* how long a counter has
stood still.  Machines' clocks may then disagree without harm.

Fencing: ``check_epoch`` takes a shared lock on the lease row and compares the
epoch with the caller's.  A takeover updates that row, so it waits for every
open transaction of the old leader that passed the check, and every
transaction the old leader starts afterwards fails it.  A leader paused (SIGSTOP,
a long GC, a lost network) therefore cannot write once another has taken over.
On SQLite every transaction takes the database's write lock (``BEGIN
IMMEDIATE``), which gives the same order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from virtuai.errors import Conflict
from virtuai.store.models import LeaseRow, NodeRow

SCHEDULER_LEASE = "scheduler"


class NotLeader(Conflict):
    """This instance does not hold the lease (any more): its leader's writes are refused."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str
    holder_node: str
    epoch: int
    renew_seq: int
    renewed_at: dt.datetime


def read_lease(session: Session, name: str = SCHEDULER_LEASE) -> LeaseView | None:
    row = session.get(LeaseRow, name)
    if row is None:
        return None
    return LeaseView(row.holder, row.holder_node, row.epoch, row.renew_seq, row.renewed_at)


def ensure_lease(session: Session, now: dt.datetime, name: str = SCHEDULER_LEASE) -> None:
    """Create the (unheld) lease row once; racing creators are harmless (first one wins)."""
    values = {
        "name": name,
        "holder": "",
        "holder_node": "",
        "epoch": 0,
        "renew_seq": 0,
        "renewed_at": now,
    }
    if session.get_bind().dialect.name == "postgresql":
        session.execute(pg_insert(LeaseRow).values(**values).on_conflict_do_nothing())
    else:
        session.execute(sqlite_insert(LeaseRow).values(**values).on_conflict_do_nothing())


def take_lease(
    session: Session,
    *,
    holder: str,
    node: str,
    seen: LeaseView,
    now: dt.datetime,
    name: str = SCHEDULER_LEASE,
) -> int | None:
    """Take over from the holder we saw (``seen``), if nothing changed since: the new epoch,
    or ``None`` when someone renewed or took it meanwhile."""
    _short_lock_wait(session)
    result = session.execute(
        update(LeaseRow)
        .where(
            LeaseRow.name == name,
            LeaseRow.epoch == seen.epoch,
            LeaseRow.renew_seq == seen.renew_seq,
        )
        .values(
            holder=holder,
            holder_node=node,
            epoch=seen.epoch + 1,
            renew_seq=0,
            renewed_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return seen.epoch + 1 if result.rowcount == 1 else None  # type: ignore[attr-defined]


def renew_lease(
    session: Session, *, holder: str, epoch: int, now: dt.datetime, name: str = SCHEDULER_LEASE
) -> bool:
    """Bump the renewal counter if we still hold the lease at ``epoch``."""
    _short_lock_wait(session)
    result = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder, LeaseRow.epoch == epoch)
        .values(renew_seq=LeaseRow.renew_seq + 1, renewed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release_lease(
    session: Session, *, holder: str, epoch: int, name: str = SCHEDULER_LEASE
) -> None:
    """Give the lease up (a clean stop): the epoch grows so that a standby may take it at once."""
    session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder, LeaseRow.epoch == epoch)
        .values(holder="", holder_node="", epoch=epoch + 1, renew_seq=0)
        .execution_options(synchronize_session=False)
    )


# How long a leader's transaction may sit idle (its process paused, its network cut) while it
# holds the lease row: a takeover waits for it, so this bounds the failover time.
LEADER_IDLE_TIMEOUT_MS = 1500


def limit_idle(session: Session) -> None:
    """First in a leader's transaction: if this process stops (SIGSTOP, a lost network) while
    the transaction holds rows, the server ends it soon, and its locks with it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(f"SET LOCAL idle_in_transaction_session_timeout = {LEADER_IDLE_TIMEOUT_MS}")
        )


def check_epoch(session: Session, epoch: int, name: str = SCHEDULER_LEASE) -> None:
    """Raise ``NotLeader`` unless the lease is still at ``epoch``; hold it there until commit."""
    limit_idle(session)
    current = session.scalar(
        select(LeaseRow.epoch).where(LeaseRow.name == name).with_for_update(read=True)
    )
    if current != epoch:
        raise NotLeader(f"the scheduling lease moved on (epoch {current}, ours {epoch})")


def heartbeat(session: Session, node: str, now: dt.datetime) -> bool:
    """Bump the node's heartbeat; False if the node is not registered (any more)."""
    result = session.execute(
        update(NodeRow)
        .where(NodeRow.name == node)
        .values(heartbeat_seq=NodeRow.heartbeat_seq + 1, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _short_lock_wait(session: Session) -> None:
    # A takeover or renewal waits for the leader's open transactions (they hold the row in
    # share mode); it must not wait for ever behind a paused one: it fails and is retried.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '500ms'"))
