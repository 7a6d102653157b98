"""Migrations that move data keep it, both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text
from test_store_state_columns import a_job

from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.migrate import alembic_config, migrate
from virtuai.store.models import JobEventRow, TaskRow


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


def test_downgrades_that_drop_job_columns_keep_the_jobs_children(bare_engine: Engine) -> None:
    """Dropping a column of ``jobs`` must not recreate the table: on SQLite the drop of the
    old copy would cascade into its tasks and events."""
    migrate(bare_engine)
    with transaction(make_session_factory(bare_engine)) as session:
        job = a_job(session)
        session.add(TaskRow(job_id=job.id, attempt=0, index=0, node="n1", driver="local"))
        session.add(JobEventRow(job_id=job.id, at=job.submitted_at, to_state="pending"))
    with bare_engine.connect() as connection, connection.begin():
        command.downgrade(alembic_config(connection), "0007")
    with bare_engine.connect() as connection:
        counts = [
            connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            for table in ("jobs", "tasks", "job_events")
        ]
    assert counts == [1, 1, 1]
