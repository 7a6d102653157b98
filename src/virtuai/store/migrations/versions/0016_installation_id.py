"""an installation made before installation ids keeps its names (the empty id)

Revision ID: 0016
Revises: '0011'
Create Date: 2026-12-05 06:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A database that already holds tenants belongs to a running installation: its Unix
    # users, workspaces and cgroups carry the names used before ids existed, so it keeps
    # them.  A new database gets a random id at the first start (store.installation).
    bind = op.get_bind()
    tenants = bind.execute(sa.text("SELECT COUNT(*) FROM tenants")).scalar_one()
    known = bind.execute(
        sa.text("SELECT COUNT(*) FROM meta WHERE key = 'installation_id'")
    ).scalar_one()
    if tenants and not known:
        bind.execute(sa.text("INSERT INTO meta (key, value) VALUES ('installation_id', '')"))


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM meta WHERE key = 'installation_id'"))
