"""jobs.preempted_by: every job whose preemption ever stopped this one

Revision ID: 0021
Revises: '0017'
Create Date: 2026-12-05 09:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "preempted_by",
                sa.JSON().with_variant(JSONB(), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )
    # A job preempted before this revision remembers its last preemptor (the only one
    # recorded then).
    build = "jsonb_build_array" if op.get_bind().dialect.name == "postgresql" else "json_array"
    op.execute(
        f"UPDATE jobs SET preempted_by = {build}(preempted_for) WHERE preempted_for IS NOT NULL"
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, never a batch copy: on SQLite that recreates the table,
    # and the ON DELETE CASCADE of its children (tasks, job_events) would empty them.
    op.execute("ALTER TABLE jobs DROP COLUMN preempted_by")
