"""jobs listed by tenant, newest first: an index on (tenant_id, id)

Revision ID: 0009
Revises: '0004'
Create Date: 2026-12-05 03:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A tenant's page of jobs (newest first, before a cursor) is a range of this index.
    op.create_index("ix_jobs_tenant_id_id", "jobs", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_id_id", table_name="jobs")
