"""jobs.image: a job may run in a sandbox over an image's root (submit --image)

Revision ID: 0013
Revises: '0011'
Create Date: 2026-12-05 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("image", sa.String(63), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, never a batch copy: on SQLite that recreates the table,
    # and the ON DELETE CASCADE of its children (tasks, job_events) would empty them.
    op.execute("ALTER TABLE jobs DROP COLUMN image")
