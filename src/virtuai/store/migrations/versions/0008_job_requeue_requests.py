"""jobs: a requeue asked for by the job itself (scontrol requeue)

Revision ID: 0008
Revises: '0004'
Create Date: 2026-12-05 03:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("requeue_requested_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, never a batch copy: on SQLite that recreates the table,
    # and the ON DELETE CASCADE of its children (tasks, job_events) would empty them.
    op.execute("ALTER TABLE jobs DROP COLUMN requeue_requested_at")
