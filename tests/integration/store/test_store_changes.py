"""The jobs' change counter (store.changes): every write the scheduler must see is above the
horizon read before it, whatever path wrote it and in whatever order transactions commit."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from test_store_state_columns import a_job

from virtuai.store.changes import (
    QUIET_COLUMNS,
    change_horizon,
    install_change_triggers,
    trigger_names,
    watched_columns,
)
from virtuai.store.db import transaction
from virtuai.store.migrate import migrate
from virtuai.store.models import JobRow


def changed_since(factory: sessionmaker[Session], horizon: int) -> dict[int, int]:
    with factory() as session:
        rows = session.execute(
            select(JobRow.id, JobRow.change_seq).where(JobRow.change_seq >= horizon)
        )
        return {job_id: seq for job_id, seq in rows}


def horizon(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return change_horizon(session)


def test_every_column_but_the_quiet_ones_is_watched() -> None:
    """A column added to the model is watched unless it is named quiet on purpose."""
    columns = {c.name for c in JobRow.__table__.columns}
    assert set(watched_columns()) == columns - QUIET_COLUMNS
    assert {"state", "cancel_requested_at", "cpu_milli", "priority"} <= set(watched_columns())


def test_writes_of_every_kind_move_the_counter_and_reasons_do_not(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        job_id = a_job(session).id
    first = horizon(session_factory)
    assert first > 0
    with transaction(session_factory) as session:  # a Core update, as bulk paths write
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(reason="waiting for quota", queue_position=3)
        )
    assert changed_since(session_factory, first) == {}
    with transaction(session_factory) as session:  # an ORM one
        job = session.get(JobRow, job_id)
        assert job is not None
        job.cancel_requested_at = dt.datetime.now(dt.UTC)
    seen = changed_since(session_factory, first)
    assert list(seen) == [job_id]
    second = horizon(session_factory)
    assert second > first
    with transaction(session_factory) as session:  # raw SQL
        session.execute(text("UPDATE jobs SET priority = 7 WHERE id = :id"), {"id": job_id})
    assert list(changed_since(session_factory, second)) == [job_id]


def test_a_transaction_that_commits_after_a_read_is_above_its_horizon(
    session_factory: sessionmaker[Session],
) -> None:
    """PostgreSQL: a writer that began first and commits last must not fall below the
    horizon of a read made meanwhile (SQLite serialises writers)."""
    with transaction(session_factory) as session:
        first = a_job(session)
        first_id = first.id
        second = JobRow(
            tenant_id=first.tenant_id, user_id=first.user_id, name="k", state="pending",
            command=["true"], cpu_milli=1000, memory=2**30, walltime_s=60,
            priority_class="normal", priority=0, submitted_at=first.submitted_at,
            updated_at=first.updated_at,
        )  # fmt: skip
        session.add(second)
        session.flush()
        second_id = second.id
    wrote, read = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction(session_factory) as session:
                session.execute(update(JobRow).where(JobRow.id == first_id).values(priority=1))
                wrote.set()
                read.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            wrote.set()

    dialect = session_factory.kw["bind"].dialect.name
    writer = threading.Thread(target=slow_writer)
    if dialect == "postgresql":
        writer.start()
        wrote.wait(10)
        # A later writer commits first, and a reader sees it.
        with transaction(session_factory) as session:
            session.execute(update(JobRow).where(JobRow.id == second_id).values(priority=2))
    before = horizon(session_factory)
    read.set()
    if dialect == "postgresql":
        writer.join(10)
    else:
        writer.start()
        writer.join(10)
    assert not errors
    assert first_id in changed_since(session_factory, before)


def test_migrate_puts_back_triggers_a_table_copy_lost(engine: Engine) -> None:
    with engine.begin() as connection:
        for name in trigger_names():
            suffix = " ON jobs" if engine.dialect.name == "postgresql" else ""
            connection.execute(text(f'DROP TRIGGER "{name}"{suffix}'))
    migrate(engine)
    with engine.begin() as connection:
        install_change_triggers(connection)  # current: nothing to do
        if engine.dialect.name == "postgresql":
            names = connection.execute(
                text("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'jobs_change_seq_%'")
            ).scalars()
        else:
            names = connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            ).scalars()
        assert sorted(names) == sorted(trigger_names())
