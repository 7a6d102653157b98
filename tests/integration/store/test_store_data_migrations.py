"""Migrations that move data keep it, both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text

from virtuai.store.db import create_db_engine
from virtuai.store.migrate import alembic_config, migrate


@pytest.fixture
def bare_engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def test_tenant_wide_quotas_move_into_their_own_rows_and_back(bare_engine: Engine) -> None:
    with bare_engine.connect() as connection, connection.begin():
        command.upgrade(alembic_config(connection), "0002")
        connection.execute(
            text(
                "INSERT INTO tenants (name, quota_cpu_milli, quota_memory, quota_gpu, weight, "
                "created_at) VALUES ('physics', 8000, 1024, 2, 1.0, '2026-01-01 00:00:00+00'),"
                " ('open', NULL, NULL, NULL, 1.0, '2026-01-01 00:00:00+00')"
            )
        )
    migrate(bare_engine)
    with bare_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT t.name, q.pool, q.nominal_cpu_milli, q.nominal_memory, q.nominal_gpu "
                "FROM tenant_quotas q JOIN tenants t ON t.id = q.tenant_id ORDER BY t.name"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("open", "*", None, None, None),
        ("physics", "*", 8000, 1024, 2),
    ]
    with bare_engine.connect() as connection, connection.begin():
        command.downgrade(alembic_config(connection), "0002")
    with bare_engine.connect() as connection:
        back = connection.execute(
            text("SELECT name, quota_cpu_milli, quota_memory, quota_gpu FROM tenants ORDER BY name")
        ).all()
    assert [tuple(r) for r in back] == [("open", None, None, None), ("physics", 8000, 1024, 2)]
