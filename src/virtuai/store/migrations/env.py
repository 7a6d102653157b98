"""Alembic environment for virtuai. Run through ``virtuai.store.migrate``, which passes
the connection (and its lock) in ``config.attributes["connection"]``; there is no alembic.ini.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator, inspect

from virtuai.errors import ConfigurationError
from virtuai.store.changes import drop_change_triggers
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


def _bound_below_head() -> bool:
    try:
        destination = context.get_revision_argument()
    except KeyError:  # a revision being written (``make_revision``): nothing is run
        return False
    return bool(destination != context.script.get_current_head())


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
        if _bound_below_head() and inspect(connection).has_table("jobs"):
            # Bound anywhere but the head (a downgrade, or a step to an older revision):
            # the jobs' change triggers name every column of the model, and PostgreSQL
            # refuses to drop a column a trigger names.  ``migrate()`` installs them
            # again once at the head (``store.changes``).
            drop_change_triggers(connection)
        context.run_migrations()


if context.is_offline_mode():
    raise ConfigurationError("offline (--sql) migrations are not supported; use migrate()")
_connection = config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise ConfigurationError(
        "run migrations with virtuai.store.migrate.migrate(engine), not the alembic command"
    )
run_migrations(_connection)
