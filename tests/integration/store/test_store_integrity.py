"""Constraints hold on both backends; SQLite runs in WAL mode with foreign keys on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.store.db import create_db_engine
from virtuai.store.migrate import migrate
from virtuai.store.models import JobEventRow, JobRow, MembershipRow, TaskRow, TenantRow, UserRow


def test_tenant_names_are_unique(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        session.add(rows.tenant("physics"))
    with session_factory() as session, pytest.raises(IntegrityError):
        session.add(rows.tenant("physics", weight=2.0))
        session.flush()


def test_token_hashes_are_unique(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        ada, bob = rows.user("ada"), rows.user("bob")
        session.add_all([ada, bob])
        session.flush()
        session.add(rows.api_token(ada, "f" * 64))
    with session_factory() as session, pytest.raises(IntegrityError):
        session.add(rows.api_token(bob, "f" * 64))
        session.flush()


def test_a_task_is_unique_per_job_attempt_and_index(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        owner, team = rows.user(), rows.tenant()
        session.add_all([owner, team])
        session.flush()
        parent = rows.job(owner, team)
        session.add(parent)
        session.flush()
        # Same index in another attempt, another index in the same attempt: both fine.
        session.add_all(
            [rows.task(parent, 0), rows.task(parent, 0, attempt=1), rows.task(parent, 1)]
        )
    with session_factory() as session, pytest.raises(IntegrityError):
        session.add(rows.task(parent, 1, node="elsewhere"))
        session.flush()


def test_foreign_keys_are_enforced(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, pytest.raises(IntegrityError):
        session.add(TaskRow(job_id=12345, attempt=0, index=0, node="n", driver="local"))
        session.flush()


def test_deleting_a_job_cascades_and_a_used_tenant_cannot_go(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session, session.begin():
        owner, team = rows.user(), rows.tenant()
        session.add_all([owner, team])
        session.flush()
        session.add(MembershipRow(user_id=owner.id, tenant_id=team.id, role="owner"))
        parent = rows.job(owner, team)
        session.add(parent)
        session.flush()
        session.add_all([rows.task(parent, 0), rows.task(parent, 1)])
        session.add(JobEventRow(job_id=parent.id, at=rows.T0, to_state="pending"))
    with session_factory() as session, session.begin():
        # A bulk DELETE: the database's ON DELETE CASCADE, not the ORM's, does the work.
        session.execute(delete(JobRow))
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(TaskRow)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(JobEventRow)).scalar_one() == 0
    with session_factory() as session, session.begin():
        session.execute(delete(UserRow))
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(MembershipRow)).scalar_one() == 0


def test_jobs_keep_their_tenant(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        owner, team = rows.user(), rows.tenant()
        session.add_all([owner, team])
        session.flush()
        session.add(rows.job(owner, team))
    with session_factory() as session, pytest.raises(IntegrityError):
        session.execute(delete(TenantRow))
        session.flush()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    migrate(engine)
    yield engine
    engine.dispose()


def test_sqlite_uses_wal_and_foreign_keys_on_every_connection(sqlite_engine: Engine) -> None:
    # Two pooled connections at once: the pragmas are set on each new one, not once.
    # (DBAPI level: every SQLAlchemy transaction on SQLite is BEGIN IMMEDIATE, so two open
    # at once in one thread would wait for each other.)
    first, second = sqlite_engine.raw_connection(), sqlite_engine.raw_connection()
    try:
        for connection in (first, second):
            cursor = connection.cursor()
            pragmas: dict[str, object] = {}
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous"):
                cursor.execute(f"PRAGMA {name}")
                (pragmas[name],) = cursor.fetchone() or (None,)
            assert pragmas == {
                "journal_mode": "wal",
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "synchronous": 2,  # FULL
            }
    finally:
        first.close()
        second.close()


def test_sqlite_migrate_turns_foreign_keys_back_on(sqlite_engine: Engine) -> None:
    """migrate() turns them off while it works; the pooled connection must not keep that."""
    migrate(sqlite_engine)
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_migrate_on_a_new_file_creates_it(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/deep/er/virtuai.db")
    try:
        migrate(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
