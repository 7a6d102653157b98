"""Alembic environment for virtuai. Run through ``virtuai.store.migrate``, which passes
the connection (and its lock) in ``config.attributes["connection"]``; there is no alembic.ini.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator

from virtuai.errors import ConfigurationError
from virtuai.store.models import Base

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write our TypeDecorators as the column type they store (``UtcDateTime`` ->
    ``sa.DateTime(timezone=True)``), so revisions never import the models, which move on."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl_instance
        if type(impl).__module__.startswith("sqlalchemy.sql"):
            return f"sa.{impl!r}"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters tables by copying them ("batch" mode); a no-op elsewhere.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise ConfigurationError("offline (--sql) migrations are not supported; use migrate()")
_connection = config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise ConfigurationError(
        "run migrations with virtuai.store.migrate.migrate(engine), not the alembic command"
    )
run_migrations(_connection)
