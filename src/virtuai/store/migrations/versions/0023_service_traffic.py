"""service_traffic: each server's recent requests per service, summed by the leader

Revision ID: 0023
Revises: '0022'
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_traffic",
        sa.Column("service_id", sa.Integer(), primary_key=True),
        sa.Column("node", sa.String(128), primary_key=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_traffic")
