"""Fixtures shared by every test. The machinery lives in ``tests/support`` (imported as
``support``: pytest puts this directory on sys.path, as there is no tests/__init__.py).

Database fixtures, from the bottom up:
    postgres_url     (session) a real PostgreSQL server for the whole session
    db_url           a fresh, empty database; runs once on SQLite, once on PostgreSQL
    engine           an Engine on db_url, migrated to head
    session_factory  a sessionmaker on engine
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from support.postgres import PostgresUnavailableError, fresh_database, postgres_session_url
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
    """The URL of a fresh, empty database (no tables) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/virtuai.db"
        return
    # Looked up here, not as an argument, so that SQLite-only runs never start a server.
    server_url: str = request.getfixturevalue("postgres_url")
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head."""
    engine = create_db_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)
