"""Engines and sessions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.session import ORMExecuteState

from virtuai.errors import ConfigurationError

READ_ONLY_OPTION = "virtuai_read_only"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` as users write it and pick the psycopg 3 driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# Several machines share one PostgreSQL: a lost network or a paused peer must not hang a
# loop, nor hold a lock, for long.  libpq parameters; a URL that sets one keeps its own.
PG_CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 3,
    "tcp_user_timeout": 5000,  # ms: unacknowledged data -> the connection is dead
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    # A paused process (SIGSTOP) inside a transaction loses it, and its locks, after 10 s
    # (the loops' writing transactions set 1 s or less: store.lease); the server notices a
    # client whose network is gone within seconds: by keepalives when the connection is
    # idle, by tcp_user_timeout when a result it sends goes unacknowledged (a backend
    # blocked writing to a cut-off client is *active*, and keeps its locks until then).
    "options": "-c idle_in_transaction_session_timeout=10000 -c tcp_keepalives_idle=2 "
    "-c tcp_keepalives_interval=1 -c tcp_keepalives_count=2 -c tcp_user_timeout=5000",
}


def create_db_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Enough pooled connections for the API's worker threads (40) and the loops: a
        # request must never wait for a connection while another holds one idle.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=16,
            max_overflow=48,
            pool_timeout=60,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in parsed.query}
        return create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args
        )
    raise ConfigurationError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://",
        field="database_url",
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, issue BEGIN (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; synchronous=FULL so a committed job
    # survives a power cut, not only a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # A writing transaction takes the write lock at BEGIN, so two writers queue on
    # busy_timeout instead of failing with "database is locked" when a read
    # transaction upgrades.  A reading one (``read_transaction``) begins deferred:
    # under WAL it reads a snapshot and never waits for, nor blocks, the writer.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with factory() as session, session.begin():
        yield session


def lost_transaction(error: BaseException) -> bool:
    """Whether ``error`` is the database's, not one item's: the connection is gone (a server
    that ended an idle transaction, a lost network) or the database refused (locked, full).
    The whole transaction is lost; code that catches one item's failure inside it (a
    savepoint per job) must let this one through, to be retried by its loop, rather than
    charge it to the item and go on with a dead session."""
    if isinstance(error, OperationalError | InterfaceError | PendingRollbackError):
        return True
    # PostgreSQL's end of a transaction left idle too long (``store.lease``) is an
    # ``InternalError`` (SQLSTATE 25P03) on a connection SQLAlchemy then invalidates.
    return isinstance(error, DBAPIError) and error.connection_invalidated


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that only reads: on SQLite it never takes the write lock.

    For GET endpoints and authentication, so that a storm of readers never
    queues behind (or fails on) the writers.  Writing in it is a bug: flushing
    a change raises at once instead of upgrading the transaction, which SQLite
    could refuse with "database is locked" whatever the busy timeout.
    """
    with read_session(factory) as session, session.begin():
        yield session


def read_session(factory: sessionmaker[Session]) -> Session:
    """A session for reading only (see ``read_transaction``); the caller ends it."""
    bind = factory.kw.get("bind")
    session = factory(bind=_read_only_bind(factory, bind) if isinstance(bind, Engine) else bind)
    session.info[READ_ONLY_OPTION] = True
    return session


# Keyed by the session factory, not by the engine: the read-only copy refers to its engine,
# so a weak key of the engine itself would be kept alive by its own value (every engine,
# its pool and its compiled statements, for the life of the process).
_READ_ONLY_BINDS: weakref.WeakKeyDictionary[sessionmaker[Session], Engine] = (
    weakref.WeakKeyDictionary()
)


def _read_only_bind(factory: sessionmaker[Session], engine: Engine) -> Engine:
    # Engine.execution_options() makes a light copy sharing the pool and the event
    # listeners; keep one per factory.
    found = _READ_ONLY_BINDS.get(factory)
    if found is None:
        found = engine.execution_options(**{READ_ONLY_OPTION: True})
        _READ_ONLY_BINDS[factory] = found
    return found


@event.listens_for(Session, "before_flush")
def _refuse_writes_when_read_only(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(READ_ONLY_OPTION) and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a read-only transaction tried to write")


@event.listens_for(Session, "do_orm_execute")
def _refuse_dml_when_read_only(state: ORMExecuteState) -> None:
    if state.session.info.get(READ_ONLY_OPTION) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise RuntimeError("a read-only transaction tried to write")
