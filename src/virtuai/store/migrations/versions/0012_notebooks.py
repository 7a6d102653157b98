"""notebooks: a tenant's idle timeout, and why the platform cancelled a job

Revision ID: 0012
Revises: '0011'
Create Date: 2026-12-05 06:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("notebook_idle_timeout_s", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("cancel_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL), never a batch copy: on SQLite
    # that recreates the table, and the ON DELETE CASCADE of its children (tenant_quotas,
    # tasks, job_events) would empty them.
    op.execute("ALTER TABLE jobs DROP COLUMN cancel_reason")
    op.execute("ALTER TABLE tenants DROP COLUMN notebook_idle_timeout_s")
