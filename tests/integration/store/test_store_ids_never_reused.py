"""Ids of deleted rows are never given to new rows (SQLite's AUTOINCREMENT, PostgreSQL's
sequences), and migration 0031 turns it on for an existing SQLite database with every
row, index and foreign key kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, Integer, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.migrate import alembic_config, head_revision, migrate
from virtuai.store.models import (
    Base,
    DatasetCopyRow,
    DatasetRow,
    EnvironmentRow,
    JobRow,
    ServiceReplicaRow,
    ServiceRow,
    ServiceTrafficRow,
    SiteRow,
    TenantQuotaRow,
)

T0 = rows.T0
REBUILT = (
    "tenants",
    "users",
    "api_tokens",
    "sites",
    "environments",
    "datasets",
    "dataset_copies",
    "services",
    "service_replicas",
    "jobs",
)
# Integer ids that may still be reused on SQLite: these rows are never deleted (jobs and
# virtual clusters, their parents, never are), so no id of theirs is ever freed.
NEVER_DELETED = {"tasks", "job_events", "vc_events", "usage_records"}


def test_every_table_with_an_integer_id_never_reuses_one_or_never_deletes() -> None:
    """A new table with an integer id must choose: AUTOINCREMENT, or rows never deleted."""
    for table in Base.metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer) or not pk[0].autoincrement:
            continue
        if table.name in NEVER_DELETED or pk[0].name != "id":
            continue
        assert table.dialect_kwargs.get("sqlite_autoincrement") is True, table.name


def test_a_migrated_sqlite_database_has_autoincrement_where_the_models_declare_it(
    tmp_path: Path,
) -> None:
    """Batch mode's copies reflect a table, and reflection loses AUTOINCREMENT: a later
    rebuild must say ``table_kwargs={"sqlite_autoincrement": True}`` (``jobs`` lost it)."""
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    try:
        migrate(engine)
        with engine.connect() as connection:
            created = dict(
                connection.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table'"
                ).all()
            )
    finally:
        engine.dispose()
    declared = {
        t.name for t in Base.metadata.sorted_tables if t.dialect_kwargs.get("sqlite_autoincrement")
    }
    assert {name for name, sql in created.items() if "AUTOINCREMENT" in sql} == declared
    assert set(REBUILT) <= declared


class World:
    """One row of each parent the tables under test need."""

    def __init__(self, session: Session) -> None:
        self.tenant, self.user = rows.tenant("physics"), rows.user("ada")
        session.add_all([self.tenant, self.user])
        session.flush()
        self.job_n = 0
        self.n = 0

    def unique(self) -> str:
        self.n += 1
        return f"x{self.n}"

    def job(self, session: Session) -> JobRow:
        job = rows.job(self.user, self.tenant)
        session.add(job)
        session.flush()
        return job

    def dataset(self, session: Session) -> DatasetRow:
        row = DatasetRow(tenant_id=self.tenant.id, name=self.unique(), path="/data", created_at=T0)
        session.add(row)
        session.flush()
        return row

    def service(self, session: Session) -> ServiceRow:
        row = ServiceRow(
            tenant_id=self.tenant.id,
            user_id=self.user.id,
            name=self.unique(),
            spec={},
            digest="0" * 64,
            created_at=T0,
            updated_at=T0,
        )
        session.add(row)
        session.flush()
        return row


def _site(w: World, s: Session) -> SiteRow:
    name = w.unique()
    return SiteRow(name=name, token="t" * 32, pool=name, created_at=T0, updated_at=T0)


def _environment(w: World, s: Session) -> EnvironmentRow:
    return EnvironmentRow(
        tenant_id=w.tenant.id,
        name=w.unique(),
        kind="pip",
        python="3.11",
        digest="0" * 64,
        path="/envs/x",
        created_at=T0,
        updated_at=T0,
    )


def _copy(w: World, s: Session) -> DatasetCopyRow:
    return DatasetCopyRow(
        dataset_id=w.dataset(s).id, site=w.unique(), state="pending", requested_at=T0
    )


def _replica(w: World, s: Session) -> ServiceReplicaRow:
    return ServiceReplicaRow(
        service_id=w.service(s).id, job_id=w.job(s).id, generation=1, created_at=T0
    )


BUILDERS: dict[str, Callable[[World, Session], Any]] = {
    "tenants": lambda w, s: rows.tenant(w.unique()),
    "users": lambda w, s: rows.user(w.unique()),
    "api_tokens": lambda w, s: rows.api_token(w.user, w.unique().rjust(64, "0")),
    "sites": _site,
    "environments": _environment,
    "datasets": lambda w, s: w.dataset(s),
    "dataset_copies": _copy,
    "services": lambda w, s: w.service(s),
    "service_replicas": _replica,
    "jobs": lambda w, s: w.job(s),
}


@pytest.mark.parametrize("table", sorted(BUILDERS))
def test_a_deleted_rows_id_is_never_given_to_the_next_row(
    session_factory: sessionmaker[Session], table: str
) -> None:
    """The row with the largest id goes; the next row gets a larger one (SQLite without
    AUTOINCREMENT gave it the same id)."""
    with transaction(session_factory) as session:
        world = World(session)
        build = BUILDERS[table]
        first, last = build(world, session), build(world, session)
        session.add_all([first, last])
        session.flush()
        gone = last.id
        assert gone > first.id
    with transaction(session_factory) as session:
        session.delete(session.get(type(last), gone))
    with transaction(session_factory) as session:
        world.tenant, world.user = session.merge(world.tenant), session.merge(world.user)
        fresh = build(world, session)
        session.add(fresh)
        session.flush()
        assert fresh.id > gone


def _dump(
    connection: sa.Connection, table: str, columns: list[str] | None = None
) -> list[tuple[Any, ...]]:
    listed = "*" if columns is None else ", ".join(columns)
    query = f"SELECT {listed} FROM {table} ORDER BY 1"
    return [tuple(r) for r in connection.exec_driver_sql(query)]


def _column_names(connection: sa.Connection, table: str) -> list[str]:
    return [r[1] for r in connection.exec_driver_sql(f"PRAGMA table_info({table})")]


def _later_columns(connection: sa.Connection) -> dict[str, list[sa.Column[Any]]]:
    """The models' columns of the rebuilt tables that later revisions add."""
    later: dict[str, list[sa.Column[Any]]] = {}
    for table in REBUILT:
        there = set(_column_names(connection, table))
        model = Base.metadata.tables[table]
        later[table] = [c for c in model.columns if c.name not in there]
    return later


def _shape(connection: sa.Connection, table: str) -> dict[str, Any]:
    """Columns, indexes (name, unique, origin, partial, columns) and foreign keys."""
    indexes = []
    for _seq, name, unique, origin, partial in connection.exec_driver_sql(
        f"PRAGMA index_list({table})"
    ):
        columns = [r[2] for r in connection.exec_driver_sql(f"PRAGMA index_info('{name}')")]
        where = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).scalar()
        partial_where = None if not partial else str(where).split(" WHERE ", 1)[1]
        # Autoindexes (unnamed UNIQUE) are renumbered by a rebuild: compare them by content.
        key = name if not name.startswith("sqlite_autoindex") else "auto"
        indexes.append((key, unique, origin, partial_where, columns))
    fks = [tuple(r)[2:] for r in connection.exec_driver_sql(f"PRAGMA foreign_key_list({table})")]
    columns = [tuple(r) for r in connection.exec_driver_sql(f"PRAGMA table_info({table})")]
    return {"columns": columns, "indexes": sorted(indexes), "fks": sorted(fks)}


def test_0031_rebuilds_with_autoincrement_and_keeps_rows_indexes_and_foreign_keys(
    tmp_path: Path,
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    try:
        _migration_keeps_everything(engine)
    finally:
        engine.dispose()


def _migration_keeps_everything(engine: Engine) -> None:
    with engine.connect() as connection, connection.begin():
        command.upgrade(alembic_config(connection), "0030")
        # The rows are built by today's models: the columns later revisions add are there
        # while they are written, and dropped before the upgrade (which adds them back).
        later = _later_columns(connection)
        for table, columns in later.items():
            for column in columns:
                spec = column.type.compile(connection.dialect)
                default = column.server_default
                clause = "" if default is None else f" DEFAULT {default.arg.text}"  # type: ignore[attr-defined]
                connection.exec_driver_sql(
                    f"ALTER TABLE {table} ADD COLUMN {column.name} {spec}{clause}"
                )
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        world = World(session)
        session.add(TenantQuotaRow(tenant_id=world.tenant.id, pool="*", nominal_gpu=2))
        for table, build in BUILDERS.items():
            if table not in ("tenants", "users"):
                session.add_all([build(world, session), build(world, session)])
        session.flush()
        doomed = world.service(session)  # the largest service id: deleted below
        doomed_id = doomed.id
        session.add(rows.task(world.job(session)))
        session.add(ServiceTrafficRow(service_id=doomed_id, node="n1", rate=5.0, updated_at=T0))
        session.flush()
        session.delete(doomed)
        child_tables = ("tenant_quotas", "tasks", "service_traffic")
    with engine.connect() as connection, connection.begin():
        for table, columns in later.items():
            for column in columns:
                connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column.name}")
    with engine.connect() as connection:
        before = {t: (_dump(connection, t), _shape(connection, t)) for t in REBUILT}
        names = {t: _column_names(connection, t) for t in REBUILT}
        children = {t: _dump(connection, t) for t in child_tables}
        assert all(len(dumped) >= 1 for dumped, _ in before.values())

    migrate(engine)

    assert head_revision() is not None
    with engine.connect() as connection:
        for table in REBUILT:
            dumped, shape = before[table]
            assert _dump(connection, table, names[table]) == dumped, table
            after = _shape(connection, table)
            # Columns of later revisions come after the rebuilt ones, which keep their place.
            assert after["columns"][: len(shape["columns"])] == shape["columns"], table
            assert {**after, "columns": shape["columns"]} == shape, table
            created = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).scalar()
            assert "AUTOINCREMENT" in str(created), table
        assert {t: _dump(connection, t) for t in child_tables} == children
        assert connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # The foreign keys still act: a dangling replica is refused, a dataset's copies go with it.
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.execute(
            sa.insert(ServiceReplicaRow).values(
                service_id=10_000, job_id=1, generation=1, created_at=T0
            )
        )
    with transaction(factory) as session:
        dataset_id = session.scalar(select(DatasetCopyRow.dataset_id).limit(1))
        assert dataset_id is not None
        session.execute(sa.delete(DatasetRow).where(DatasetRow.id == dataset_id))
    with transaction(factory) as session:
        left = select(func.count()).select_from(DatasetCopyRow)
        assert session.scalar(left.where(DatasetCopyRow.dataset_id == dataset_id)) == 0
        # A new service gets an id past the deleted one's, whose traffic rows remain.
        world.tenant, world.user = session.merge(world.tenant), session.merge(world.user)
        assert world.service(session).id > doomed_id
