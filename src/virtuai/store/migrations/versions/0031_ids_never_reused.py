"""SQLite: AUTOINCREMENT on every table whose rows are deleted and whose ids outlive them

Without AUTOINCREMENT, SQLite gives the next row max(rowid) + 1: the id of a deleted row
that had the largest id goes to the next row.  These tables' rows are hard-deleted, and
their ids are held outside the row (the proxies' request counts and ``service_traffic``
by service id, probe results by replica id, build threads and build logs by environment
id, copies by copy id, drivers by site, caches by tenant and user): a new row must never
answer to an old one's id.  ``jobs`` lost the AUTOINCREMENT it was created with (see
``TABLES``) and gets it back.  PostgreSQL's sequences never go back: nothing changes there.

Each table is rebuilt (batch mode, ``recreate="always"``) with its data, indexes and
foreign keys.  ``migrate()`` turns SQLite's foreign keys off around the upgrade, so the
DROP of a parent cascades into nothing, and runs ``PRAGMA foreign_key_check`` after it.

Revision ID: 0031
Revises: '0030'
Create Date: 2026-12-05 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | Sequence[str] | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Parents before children (the order does not matter with foreign keys off; it reads well).
TABLES = (
    "tenants",
    "users",
    "api_tokens",
    "sites",
    "environments",
    "datasets",
    "dataset_copies",
    "services",
    "service_replicas",
    # Declared with AUTOINCREMENT since 0001, lost at an early rebuild (batch mode's copy
    # reflects the table, and reflection does not carry ``sqlite_autoincrement``).  Its
    # ids name task directories: put it back.  ``migrate()`` recreates its triggers.
    "jobs",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # The DROP of each old copy would cascade into (or be refused by) its children.
        raise RuntimeError("0031 rebuilds tables: run it through virtuai.store.migrate.migrate")
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    # A service deleted before this revision, with the largest id, may still have rows in
    # service_traffic (no foreign key: a row written just after the delete stays until
    # the reconciler's next sweep).  The copy above set the sequence to max(id); start it
    # past those too, so no new service inherits their counts.
    op.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, "
        "(SELECT coalesce(max(service_id), 0) FROM service_traffic)) WHERE name = 'services'"
    )
    op.execute(
        "INSERT INTO sqlite_sequence (name, seq) "
        "SELECT 'services', (SELECT max(service_id) FROM service_traffic) "
        "WHERE EXISTS (SELECT 1 FROM service_traffic) "
        "AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'services')"
    )


def downgrade() -> None:
    # Nothing: AUTOINCREMENT is harmless to the older revisions' code, and a rebuild here
    # would run with foreign keys on (``command.downgrade`` is not wrapped as ``migrate()``
    # is), where dropping ``tenants`` would cascade into its quotas.  Upgrading again
    # rebuilds the tables once more, which changes nothing.
    return None
