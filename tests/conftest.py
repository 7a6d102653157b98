"""Fixtures shared by every test. The machinery lives in ``tests/support`` (imported as
``support``: pytest puts this directory on sys.path, as there is no tests/__init__.py).

Database fixtures, from the bottom up:
    postgres_url     (session) a real PostgreSQL server for the whole session
    db_url           a fresh database; runs once on SQLite, once on PostgreSQL; empty,
                     unless the test uses ``engine``: then a copy of one migrated once
                     per session (``sqlite_template``, ``postgres_template``)
    engine           an Engine on db_url, migrated to head
    session_factory  a sessionmaker on engine
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from support.postgres import (
    PostgresUnavailableError,
    create_database,
    drop_database,
    fresh_database,
    postgres_session_url,
)
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate

# Properties are about behaviour, never about time (speed is measured in bench/): no
# per-example deadline and no "too slow" health check, which fail on a loaded machine.
settings.register_profile("virtuai", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("virtuai")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser URL (``postgresql://virtuai@127.0.0.1:PORT/virtuai_test``) to a server
    started for this session; skips when PostgreSQL is not installed, unless
    VIRTUAI_REQUIRE_POSTGRES=1."""
    try:
        with postgres_session_url() as url:
            yield url
    except PostgresUnavailableError as exc:
        if os.environ.get("VIRTUAI_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"VIRTUAI_REQUIRE_POSTGRES=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh database on each backend: empty (no tables), or, for a test that
    uses ``engine``, a copy of the session's migrated template (migrating each of some 600
    databases took 0.2-0.3 s; a copy takes 1 ms on SQLite, 0.1 s on PostgreSQL)."""
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "virtuai.db"
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    # Looked up here, not as an argument, so that SQLite-only runs never start a server.
    server_url: str = request.getfixturevalue("postgres_url")
    template = request.getfixturevalue("postgres_template") if migrated else None
    with fresh_database(server_url, template) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, once per session (``db_url`` copies it)."""
    path = tmp_path_factory.mktemp("migrated") / "virtuai.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database migrated to head, once per session (``db_url``
    creates each test's database from it)."""
    name = f"migrated_{secrets.token_hex(4)}"
    engine = create_db_engine(create_database(postgres_url, name))
    migrate(engine)
    engine.dispose()  # a template is copied only while nobody is connected to it
    yield name
    drop_database(postgres_url, name)  # a server given by VIRTUAI_TEST_POSTGRES_URL stays


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head (``db_url``: a migrated copy; the
    migration that finds it at head is what a restarted server runs)."""
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)
