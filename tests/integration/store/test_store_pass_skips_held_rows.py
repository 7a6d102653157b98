"""The scheduling pass never waits behind a job row another transaction holds (#7).

A stopped instance (SIGSTOP, a lost network) whose API request was cancelling a pending
job holds that job's row until the server ends its transaction (the API connections' idle
limit: 10 s).  The new leader's pass must not wait for it: it admits everything else at
once and takes the held job at its first pass after the holder has gone.

PostgreSQL only (on SQLite every writer holds the database's write lock).  The paused
holder is played by the test's own session, with the server's idle limit off, so that a
pass that waited would wait for ever (the thread's join times out and the test fails).
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.control.scheduling import SchedulingLoop, TickReport
from virtuai.domain.clock import ManualClock
from virtuai.domain.workload import JobState
from virtuai.store import transitions
from virtuai.store.db import transaction
from virtuai.store.models import JobRow, NodeRow

pytestmark = pytest.mark.postgres

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Far beyond a pass on this machine, even loaded; a pass that waits never returns.
HUNG_S = 30.0


def _tick(loop: SchedulingLoop) -> TickReport:
    """A tick in a thread of its own: one that waits on a lock fails the test, not hangs it."""
    done: list[TickReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            done.append(loop.tick())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HUNG_S)
    assert not thread.is_alive(), "the pass waited behind the held row"
    assert errors == []
    return done[0]


def _states(pg_sessions: sessionmaker[Session]) -> dict[str, JobState]:
    with transaction(pg_sessions) as session:
        return {j.name: JobState(j.state) for j in session.scalars(select(JobRow))}


@pytest.mark.parametrize("chunk", [transitions.LOCK_CHUNK, 1], ids=["one-lock", "chunked"])
def test_a_pass_admits_around_a_held_pending_job_then_admits_it_once_freed(
    pg_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(transitions, "LOCK_CHUNK", chunk)
    with transaction(pg_sessions) as session:
        team, owner = rows.tenant(), rows.user()
        session.add_all([team, owner])
        session.flush()
        session.add(
            NodeRow(
                name="n1", site="local", pool="default", cpu_milli=4000, memory=8 * 2**30,
                updated_at=NOW,
            )
        )  # fmt: skip
        session.add_all([rows.job(owner, team, name=name) for name in ("held", "free")])
    loop = SchedulingLoop(pg_sessions, ManualClock(NOW))
    holder = pg_sessions()
    try:
        # A cancel left open by a stopped process (the server would end it after 10 s).
        holder.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        holder.execute(update(JobRow).where(JobRow.name == "held").values(cancel_requested_at=NOW))
        report = _tick(loop)
        assert report.admitted == 1 and report.skipped >= 1
        assert _states(pg_sessions) == {"held": JobState.PENDING, "free": JobState.ADMITTED}
        # Still held: the next pass skips it again, and still does not wait.
        assert _tick(loop).admitted == 0
    finally:
        holder.rollback()  # the holder ends without a change: no change counter moves
        holder.close()
    report = _tick(loop)
    assert report.admitted == 1 and report.skipped == 0
    assert _states(pg_sessions) == {"held": JobState.ADMITTED, "free": JobState.ADMITTED}
    assert _tick(loop) == TickReport(0, 0)  # and then idle again
