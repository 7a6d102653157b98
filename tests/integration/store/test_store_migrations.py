"""Migrations build exactly the models' schema, on SQLite and PostgreSQL, once and concurrently."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, func, inspect, select, text
from sqlalchemy.schema import ForeignKeyConstraint, PrimaryKeyConstraint, UniqueConstraint

from support import rows
from virtuai.errors import ConfigurationError
from virtuai.store import migrate as migrate_module
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import (
    MIGRATIONS_DIR,
    PG_MIGRATION_LOCK_KEY,
    alembic_config,
    current_revision,
    head_revision,
    make_revision,
    migrate,
)
from virtuai.store.models import Base, TaskRow

DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)


def schema_diff(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))


def record_ddl(engine: Engine) -> list[str]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if DDL.match(statement):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    return statements


@pytest.fixture
def bare_engine(db_url: str) -> Iterator[Engine]:
    """An engine on the fresh database, not migrated."""
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def test_a_fresh_database_has_no_revision(bare_engine: Engine) -> None:
    assert current_revision(bare_engine) is None
    assert inspect(bare_engine).get_table_names() == []


def test_migrations_build_the_schema_of_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_constraint_and_index_names_follow_the_convention(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        expected = {
            "pk": {c.name for c in table.constraints if isinstance(c, PrimaryKeyConstraint)},
            "uq": {c.name for c in table.constraints if isinstance(c, UniqueConstraint)},
            "fk": {c.name for c in table.constraints if isinstance(c, ForeignKeyConstraint)},
            "ix": {i.name for i in table.indexes},
        }
        actual = {
            "pk": {inspector.get_pk_constraint(table.name)["name"]},
            "uq": {c["name"] for c in inspector.get_unique_constraints(table.name)},
            "fk": {c["name"] for c in inspector.get_foreign_keys(table.name)},
            # PostgreSQL also lists the index behind each unique constraint.
            "ix": {
                i["name"]
                for i in inspector.get_indexes(table.name)
                if not i.get("duplicates_constraint")
            },
        }
        if engine.dialect.name == "sqlite" and table.dialect_kwargs.get("sqlite_autoincrement"):
            # SQLite writes AUTOINCREMENT keys inline on the column, where no name is kept.
            actual["pk"] = expected["pk"]
        assert actual == expected, table.name
        assert all(name and name.startswith(kind) for kind in actual for name in actual[kind])


def test_migrating_again_is_a_no_op(engine: Engine) -> None:
    ddl = record_ddl(engine)
    migrate(engine)
    migrate(engine)
    assert ddl == []
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []


def test_concurrent_migrations_both_succeed_and_run_once(db_url: str) -> None:
    workers = 4
    barrier = threading.Barrier(workers)
    engines = [create_db_engine(db_url) for _ in range(workers)]
    ddl = [record_ddl(engine) for engine in engines]
    errors: list[BaseException] = []

    def start_server(engine: Engine) -> None:
        try:
            barrier.wait(timeout=30)
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_server, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert not any(thread.is_alive() for thread in threads)
        assert {current_revision(engine) for engine in engines} == {head_revision()}
        creates = [s for statements in ddl for s in statements if "CREATE TABLE tenants" in s]
        assert len(creates) == 1, "the schema was built more than once"
        assert schema_diff(engines[0]) == []
    finally:
        for engine in engines:
            engine.dispose()


def test_servers_starting_together_wait_for_the_one_migrating(
    db_url: str, bare_engine: Engine
) -> None:
    """Processes, not threads: only the database's lock can serialise them."""
    servers = 3
    command_line = [sys.executable, "-m", "virtuai.store.migrate", "upgrade", db_url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with bare_engine.connect() as holder:
        # Hold the lock migrate() takes, so that every server is made to wait for it.
        if holder.dialect.name == "postgresql":
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
            holder.commit()
        else:
            holder.begin()  # BEGIN IMMEDIATE: the database's write lock
        processes = [
            subprocess.Popen(
                command_line, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(servers)
        ]
        try:
            wait_until_waiting(holder, processes, servers)
            assert [p.poll() for p in processes] == [None] * servers
        finally:
            if holder.dialect.name == "postgresql":
                holder.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK_KEY}
                )
                holder.commit()
            else:
                holder.rollback()
        outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * servers, [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [head_revision()] * servers
    assert schema_diff(bare_engine) == []


def wait_until_waiting(
    holder: Connection, processes: list[subprocess.Popen[str]], count: int
) -> None:
    if holder.dialect.name != "postgresql":
        time.sleep(2.0)  # SQLite shows no waiters; a late one only makes the run serial
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert [p.poll() for p in processes] == [None] * len(processes)
        waiting = holder.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
        holder.commit()
        if waiting == count:
            return
        time.sleep(0.05)
    pytest.fail(f"the servers never queued on the migration lock ({waiting} of {count})")


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    with engine.connect() as connection, connection.begin():
        command.downgrade(alembic_config(connection), "base")
    assert current_revision(engine) is None
    assert inspect(engine).get_table_names() == ["alembic_version"]
    migrate(engine)
    assert schema_diff(engine) == []


def test_revisions_form_one_numbered_chain() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    revisions = list(reversed(list(script.walk_revisions())))
    # Numbered in order; a gap is allowed while parallel branches wait to be re-chained.
    numbers = [int(r.revision) for r in revisions]
    assert numbers[0] == 1 and numbers == sorted(set(numbers))
    assert all(r.revision == f"{int(r.revision):04d}" for r in revisions)
    for previous, revision in zip([None, *revisions], revisions, strict=False):
        assert revision.down_revision == (previous.revision if previous else None)
        assert revision.path.startswith(str(MIGRATIONS_DIR / "versions" / revision.revision))
    assert revisions[-1].revision == head_revision()


def test_alembic_refuses_to_run_without_a_connection() -> None:
    with pytest.raises(ConfigurationError, match="migrate"):
        command.upgrade(alembic_config(), "head")


def test_make_revision_writes_the_next_numbered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The developer tool, run on a copy of the migrations: the models need no new revision."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", copy)
    previous = head_revision()
    written = make_revision("nothing to do")
    expected_id = f"{int(previous) + 1:04d}"
    assert written == copy / "versions" / f"{expected_id}_nothing_to_do.py"
    source = written.read_text()
    assert f"down_revision: str | Sequence[str] | None = {previous!r}" in source
    assert "op." not in source, "models and migrations differ: add a revision"
    assert head_revision() == expected_id


REBUILD_JOBS = '''"""rebuild jobs"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", recreate="always") as batch_op:
        batch_op.drop_column("note")
'''


def test_sqlite_table_rebuilds_keep_the_child_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's batch mode drops and recreates `jobs`; with foreign keys on, that DROP
    would cascade-delete every task and event. migrate() turns them off meanwhile."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate_module, "MIGRATIONS_DIR", copy)
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    try:
        migrate(engine)
        factory = make_session_factory(engine)
        with factory() as session, session.begin():
            owner, team = rows.user(), rows.tenant()
            session.add_all([owner, team])
            session.flush()
            parent = rows.job(owner, team)
            session.add(parent)
            session.flush()
            session.add_all([rows.task(parent, 0), rows.task(parent, 1)])
        head = head_revision()
        rev = f"{int(head) + 1:04d}"
        (copy / "versions" / f"{rev}_rebuild_jobs.py").write_text(
            REBUILD_JOBS.format(rev=rev, down=head)
        )
        migrate(engine)
        assert current_revision(engine) == rev
        assert "note" in {c["name"] for c in inspect(engine).get_columns("jobs")}
        with factory() as session:
            assert session.execute(select(func.count()).select_from(TaskRow)).scalar_one() == 2
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
