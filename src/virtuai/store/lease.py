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

No row another instance needs may stay locked for longer than the lease's time after the
process holding it stops (SIGSTOP, a lost network): the takeover, and the new leader's first
round, would wait for it.  On PostgreSQL the server ends such a transaction once it has been
idle (waiting for its stopped client) that long: ``limit_idle`` (1 s) in the leader's and the
node reconciler's writing transactions, 0.5 s in the lease's and heartbeat's own one-statement
transactions and after ``check_epoch`` (only the commit follows it).  The connections' default
(``store.db``) is 10 s, for the API.  A live process starved of the CPU that long loses the
transaction (its loop retries it); it would lose the lease too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from virtuai.errors import Conflict
from virtuai.store.db import transaction
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
    _membership_limits(session)
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
    _membership_limits(session)
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
    _membership_limits(session)
    session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder, LeaseRow.epoch == epoch)
        .values(holder="", holder_node="", epoch=epoch + 1, renew_seq=0)
        .execution_options(synchronize_session=False)
    )


# How long a leader's or node reconciler's writing transaction may sit idle (its process
# paused, its network cut) while it holds rows: at most the lease's time (1 s), so that what
# a stopped leader held is free by the time another may take over.  A gap that long between
# two statements of a live process (a starved machine) costs that transaction, retried.
LEADER_IDLE_TIMEOUT_MS = 1000
# The lease's and heartbeat's one-statement transactions, and what follows ``check_epoch``:
# only a commit is left to send.
SHORT_IDLE_TIMEOUT_MS = 500


def limit_idle(session: Session, idle_ms: int = LEADER_IDLE_TIMEOUT_MS) -> None:
    """In a leader's (or node reconciler's) writing transaction: if this process stops
    (SIGSTOP, a lost network) while the transaction holds rows, the server ends it within
    ``idle_ms``, and its locks with it.  Anywhere before the transaction goes idle: it
    covers the locks taken before it too."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {int(idle_ms)}"))


@contextmanager
def loop_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """``store.db.transaction`` for a control loop's writes (the node reconciler's): rows
    it locks (a job's, a task's, the tenant's that a job's end charges, which every node
    updates) are freed soon if this process stops with the transaction open."""
    with transaction(factory) as session:
        limit_idle(session)
        yield session


def check_epoch(session: Session, epoch: int, name: str = SCHEDULER_LEASE) -> None:
    """Raise ``NotLeader`` unless the lease is still at ``epoch``; hold it there until commit.

    The last statement before the commit (its callers make it so): it holds the lease row,
    which a takeover must update, so a process stopped just after it must lose it soon."""
    limit_idle(session, SHORT_IDLE_TIMEOUT_MS)
    current = session.scalar(
        select(LeaseRow.epoch).where(LeaseRow.name == name).with_for_update(read=True)
    )
    if current != epoch:
        raise NotLeader(f"the scheduling lease moved on (epoch {current}, ours {epoch})")


def heartbeat(session: Session, node: str, now: dt.datetime) -> bool:
    """Bump the node's heartbeat; False if the node is not registered (any more)."""
    _membership_limits(session)
    result = session.execute(
        update(NodeRow)
        .where(NodeRow.name == node)
        .values(heartbeat_seq=NodeRow.heartbeat_seq + 1, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _membership_limits(session: Session) -> None:
    # A takeover or renewal waits for the leader's open transactions (they hold the row in
    # share mode); it must not wait for ever behind a paused one: it fails and is retried.
    # And its own row lock must not outlive a stop between its UPDATE and its COMMIT: a
    # leader stopped there held the lease row until the connection's 10 s idle timeout,
    # and no one could take over (#7: the SIGSTOP that took 10.15 s).  One round trip.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "SELECT set_config('lock_timeout', '500ms', true), "
                "set_config('idle_in_transaction_session_timeout', :idle, true)"
            ),
            {"idle": str(SHORT_IDLE_TIMEOUT_MS)},
        )
