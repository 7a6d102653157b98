"""arrays dependencies preemption

Revision ID: 0002
Revises: '0001'
Create Date: 2026-11-22 02:35:04.416041
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing jobs get the defaults new ones get: no dependencies, SIGTERM, requeue.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("array_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("array_max_running", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "dependencies",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )
        batch_op.add_column(
            sa.Column("checkpoint_signal", sa.Integer(), nullable=False, server_default="15")
        )
        batch_op.add_column(sa.Column("checkpoint_grace_s", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("requeue", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.create_index(batch_op.f("ix_jobs_array_id"), ["array_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_array_id"))
        batch_op.drop_column("requeue")
        batch_op.drop_column("checkpoint_grace_s")
        batch_op.drop_column("checkpoint_signal")
        batch_op.drop_column("dependencies")
        batch_op.drop_column("array_max_running")
        batch_op.drop_column("array_index")
        batch_op.drop_column("array_id")
