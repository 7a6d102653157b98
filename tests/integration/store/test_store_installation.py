"""The installation id: made once per database, shared by every instance, kept by upgrades."""

from __future__ import annotations

import concurrent.futures

from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.installation import LENGTH, installation_id
from virtuai.store.migrate import alembic_config, migrate


def test_a_new_database_gets_one_id_whoever_asks_first(
    session_factory: sessionmaker[Session], engine: Engine
) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: installation_id(session_factory), range(8)))
    assert len(ids) == 1
    (iid,) = ids
    assert len(iid) == LENGTH and iid[0].isalpha() and iid.isalnum() and iid.islower()
    # Another instance on the same database (its own engine) sees the same id.
    other = create_db_engine(str(engine.url.render_as_string(hide_password=False)))
    try:
        assert installation_id(make_session_factory(other)) == iid
    finally:
        other.dispose()


def test_two_databases_get_different_ids(db_url: str, tmp_path: object) -> None:
    first = create_db_engine(db_url)
    second = create_db_engine(f"sqlite:///{tmp_path}/second.db")
    try:
        migrate(first)
        migrate(second)
        a = installation_id(make_session_factory(first))
        b = installation_id(make_session_factory(second))
    finally:
        first.dispose()
        second.dispose()
    assert a != b


def test_an_installation_older_than_ids_keeps_its_names(db_url: str) -> None:
    bare = create_db_engine(db_url)
    try:
        with bare.connect() as connection, connection.begin():
            command.upgrade(alembic_config(connection), "0011")
            connection.execute(
                text(
                    "INSERT INTO tenants (name, weight, created_at) "
                    "VALUES ('physics', 1.0, '2026-01-01 00:00:00+00')"
                )
            )
        migrate(bare)
        assert installation_id(make_session_factory(bare)) == ""
    finally:
        bare.dispose()
