"""datasets (a tenant's data on a site or here), their staged copies, jobs.data/stage,
and sites.expected_wait_s (the backlog from squeue --start)

Revision ID: 0014
Revises: '0011'
Create Date: 2026-12-05 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("site", sa.String(63), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    op.create_table(
        "dataset_copies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "dataset_id",
            sa.Integer(),
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("dataset_id", "site"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("data", sa.String(63), nullable=True))
        batch.add_column(
            sa.Column("stage", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("expected_wait_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, never a batch copy: on SQLite that recreates the table,
    # and the ON DELETE CASCADE of its children (tasks, job_events) would empty them.
    op.execute("ALTER TABLE sites DROP COLUMN expected_wait_s")
    op.execute("ALTER TABLE jobs DROP COLUMN stage")
    op.execute("ALTER TABLE jobs DROP COLUMN data")
    op.drop_table("dataset_copies")
    op.drop_table("datasets")
