"""Fixtures of the store's PostgreSQL-only tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support.postgres import fresh_database
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate


@pytest.fixture
def pg_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh, migrated PostgreSQL database (no SQLite variant: for what
    only a server does, such as ending an idle transaction or skipping locked rows)."""
    with fresh_database(postgres_url) as url:
        engine = create_db_engine(url)
        migrate(engine)
        try:
            yield make_session_factory(engine)
        finally:
            engine.dispose()
