"""A transaction left open by a stopped process (SIGSTOP, a cut network) gives up the rows
another instance needs within the lease's time (``store.lease``; #7).

PostgreSQL only: the server ends a session idle in its transaction for longer than the
limit the transaction set.  Each test leaves a transaction open, as a stopped leader would,
waits past that limit, and shows that another session then gets the row at once (with a
short ``lock_timeout``, so that a row still held fails the test instead of hanging it).
Before, the connections' 10 s default applied (the renewal, the node reconciler's writes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from virtuai.store.db import lost_transaction, transaction
from virtuai.store.lease import (
    LEADER_IDLE_TIMEOUT_MS,
    SHORT_IDLE_TIMEOUT_MS,
    check_epoch,
    ensure_lease,
    loop_transaction,
    read_lease,
    renew_lease,
    take_lease,
)
from virtuai.store.models import TenantRow

pytestmark = pytest.mark.postgres

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MARGIN_S = 0.4


def _lead(pg_sessions: sessionmaker[Session], holder: str) -> int:
    with transaction(pg_sessions) as session:
        ensure_lease(session, NOW)
    with transaction(pg_sessions) as session:
        seen = read_lease(session)
        assert seen is not None
        epoch = take_lease(session, holder=holder, node="n1", seen=seen, now=NOW)
    assert epoch is not None
    return epoch


@contextlib.contextmanager
def left_open(pg_sessions: sessionmaker[Session], *, loop: bool = False) -> Iterator[Session]:
    """A transaction that its process never ends (the server may): rolled back afterwards."""
    stack = contextlib.ExitStack()
    session = stack.enter_context(
        loop_transaction(pg_sessions) if loop else transaction(pg_sessions)
    )
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):  # ended by the server: nothing to roll back
            stack.__exit__(RuntimeError, RuntimeError("abandoned"), None)


def _take_over(pg_sessions: sessionmaker[Session]) -> int | None:
    """What a standby does once the lease's time has passed (take_lease: lock_timeout 0.5 s)."""
    with transaction(pg_sessions) as session:
        seen = read_lease(session)
        assert seen is not None
        return take_lease(session, holder="n2/2/b", node="n2", seen=seen, now=NOW)


def test_a_renewal_left_open_between_update_and_commit_frees_the_lease_row(
    pg_sessions: sessionmaker[Session],
) -> None:
    epoch = _lead(pg_sessions, "n1/1/a")
    with left_open(pg_sessions) as paused:
        assert renew_lease(paused, holder="n1/1/a", epoch=epoch, now=NOW)  # the row is locked
        time.sleep(SHORT_IDLE_TIMEOUT_MS / 1000 + MARGIN_S)
        assert _take_over(pg_sessions) == epoch + 1


def test_a_leader_transaction_left_open_after_its_epoch_check_frees_the_lease_row(
    pg_sessions: sessionmaker[Session],
) -> None:
    epoch = _lead(pg_sessions, "n1/1/a")
    with left_open(pg_sessions, loop=True) as paused:
        check_epoch(paused, epoch)  # holds the lease row in share mode until the commit
        time.sleep(SHORT_IDLE_TIMEOUT_MS / 1000 + MARGIN_S)
        assert _take_over(pg_sessions) == epoch + 1


def test_a_node_reconcilers_transaction_left_open_frees_the_tenants_row(
    pg_sessions: sessionmaker[Session],
) -> None:
    with transaction(pg_sessions) as session:
        session.add(TenantRow(name="lab", created_at=NOW))
    with left_open(pg_sessions, loop=True) as paused:
        # What charging a job's end does: every node updates this one row.
        paused.execute(update(TenantRow).values(usage_as_of=1.0))
        time.sleep(LEADER_IDLE_TIMEOUT_MS / 1000 + MARGIN_S)
        with transaction(pg_sessions) as other:
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            other.execute(update(TenantRow).values(usage_as_of=2.0))


def test_a_transaction_the_server_ended_for_idling_is_a_lost_transaction(
    pg_sessions: sessionmaker[Session],
) -> None:
    # What a starved (not stopped) process meets when it comes back: the server's error,
    # of SQLSTATE class 25 ("internal" to the driver), is the whole transaction's, and the
    # loops treat it as such (retried, never charged to the job at hand).
    with pytest.raises(DBAPIError) as ended, loop_transaction(pg_sessions) as session:
        session.execute(text("SELECT 1"))
        time.sleep(LEADER_IDLE_TIMEOUT_MS / 1000 + MARGIN_S)
        session.execute(text("SELECT 1"))
    assert lost_transaction(ended.value)
    with transaction(pg_sessions) as session:  # the pool hands out a live connection again
        assert session.scalar(text("SELECT 1")) == 1
