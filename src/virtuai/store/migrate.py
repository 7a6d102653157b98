"""Schema migrations: bring a database to the newest revision, safely from several servers at once.

Alembic runs from code; there is no ``alembic.ini``. The revisions live in
``virtuai/store/migrations/versions`` (see the README there for adding one).

Concurrency: every server calls :func:`migrate` at start-up, so two may do it at
once. On PostgreSQL the upgrade runs under a session-level advisory lock; on
SQLite it runs in one ``BEGIN IMMEDIATE`` transaction (see ``virtuai.store.db``),
which holds the database's write lock. Either way the second caller waits, then
finds the schema at head and does nothing. Within one process, calls are also
serialised by a thread lock, as Alembic keeps its running context in module globals
(``alembic.context``, ``alembic.op``).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from virtuai.errors import ConfigurationError
from virtuai.store.changes import install_change_triggers
from virtuai.store.db import create_db_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Every virtuai server takes this one key (ASCII "virtuaiM"), so upgrades never overlap.
PG_MIGRATION_LOCK_KEY = 0x7669727475616D4D

# Alembic's `context` and `op` are module-level proxies: one command at a time per process.
# Always taken before any database lock, so the two can never deadlock.
_ALEMBIC_LOCK = threading.Lock()

__all__ = [
    "MIGRATIONS_DIR",
    "PG_MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revision",
    "head_revision",
    "make_revision",
    "migrate",
]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code; ``connection`` is what ``env.py`` migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Revision files are named "<rev>_<slug>.py", e.g. 0002_add_volumes.py.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigurationError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Upgrade the database to head. Idempotent; safe to call from concurrent processes."""
    with _ALEMBIC_LOCK, engine.connect() as connection:
        backend = connection.dialect.name
        if backend == "postgresql":
            _upgrade_postgresql(connection)
        elif backend == "sqlite":
            _upgrade_sqlite(connection)
        else:  # pragma: no cover - create_db_engine accepts only the two above
            raise ConfigurationError(f"cannot migrate a {backend} database", field="database_url")


def _upgrade(connection: Connection) -> None:
    # One transaction opened here (an "external" one to Alembic): reading the
    # current revision, every migration and the new version stamp commit together.
    with connection.begin():
        command.upgrade(alembic_config(connection), "head")
        install_change_triggers(connection)


def _upgrade_postgresql(connection: Connection) -> None:
    # A session-level lock, committed before the upgrade starts, so that the
    # upgrade's own transaction begins (and takes its snapshot) only once we hold it.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        _upgrade(connection)
    finally:
        if connection.in_transaction():
            connection.rollback()
        if not connection.invalidated:
            connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK_KEY}
            )
            connection.commit()


def _upgrade_sqlite(connection: Connection) -> None:
    # SQLite cannot ALTER most things, so Alembic's batch mode copies a table,
    # drops the old one and renames the copy. With foreign keys on, that DROP
    # would run ON DELETE CASCADE on every child table. SQLite's own recipe:
    # foreign keys off (outside any transaction), migrate, foreign_key_check,
    # commit, foreign keys back on.
    raw = connection.connection.dbapi_connection
    assert raw is not None
    if connection.in_transaction():  # pragma: no cover - a fresh connection is idle
        connection.rollback()
    # On the DBAPI connection: through SQLAlchemy it would run inside a BEGIN, where
    # SQLite ignores it.
    raw.cursor().execute("PRAGMA foreign_keys=OFF")
    try:
        with connection.begin():  # BEGIN IMMEDIATE: the database's write lock
            command.upgrade(alembic_config(connection), "head")
            install_change_triggers(connection)
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise ConfigurationError(
                    f"migration left rows with dangling foreign keys: {broken[:5]!r}"
                )
    finally:
        try:
            raw.cursor().execute("PRAGMA foreign_keys=ON")
        except Exception:
            # Never hand a connection without foreign keys back to the pool.
            connection.invalidate()
            raise


def make_revision(message: str, *, url: str | None = None, rev_id: str | None = None) -> Path:
    """Write a new revision autogenerated from the models (a tool for developers).

    The database compared against is ``url`` migrated to head, or by default a
    scratch SQLite file. Review the file it writes before committing it.
    """
    script = ScriptDirectory.from_config(alembic_config())
    if rev_id is None:
        rev_id = _next_rev_id(script)
    with tempfile.TemporaryDirectory(prefix="virtuai-revision-") as scratch:
        engine = create_db_engine(url or f"sqlite:///{scratch}/scratch.db")
        try:
            migrate(engine)
            with _ALEMBIC_LOCK, engine.connect() as connection, connection.begin():
                written = command.revision(
                    alembic_config(connection), message=message, autogenerate=True, rev_id=rev_id
                )
        finally:
            engine.dispose()
    scripts = written if isinstance(written, list) else [written]
    assert scripts and scripts[0] is not None
    return Path(scripts[0].path)


def _next_rev_id(script: ScriptDirectory) -> str:
    numbers = [int(rev.revision) for rev in script.walk_revisions() if rev.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m virtuai.store.migrate revision -m "add volumes" [--url URL]``."""
    parser = argparse.ArgumentParser(prog="python -m virtuai.store.migrate")
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="autogenerate a new revision")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--url", help="compare against this database (default: scratch SQLite)")
    revision.add_argument("--rev-id", help="default: the next number, e.g. 0002")
    upgrade = commands.add_parser("upgrade", help="upgrade a database to head")
    upgrade.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "revision":
        if args.rev_id is not None and not re.fullmatch(r"\d{4}", args.rev_id):
            parser.error("--rev-id must be four digits")
        print(make_revision(args.message, url=args.url, rev_id=args.rev_id))
    else:
        engine = create_db_engine(args.url)
        try:
            migrate(engine)
            print(current_revision(engine))
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
