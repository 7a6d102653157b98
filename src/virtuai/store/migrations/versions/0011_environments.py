"""per-tenant Python environments (content-addressed builds) and jobs.environment

Revision ID: 0011
Revises: '0009'
Create Date: 2026-12-05 04:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("python", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("environment", sa.String(63), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, never a batch copy: on SQLite that recreates the table,
    # and the ON DELETE CASCADE of its children (tasks, job_events) would empty them.
    op.execute("ALTER TABLE jobs DROP COLUMN environment")
    op.drop_table("environments")
