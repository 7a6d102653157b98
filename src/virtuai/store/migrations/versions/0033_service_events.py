"""service_events: what happened to a service (replicas started, ready, restarted, drained,
ended; the wanted count; specs applied), the last 50 per service

Revision ID: 0033
Revises: '0032'
Create Date: 2026-12-06 09:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | Sequence[str] | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_service_events_service_id_id", "service_events", ["service_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_service_events_service_id_id", table_name="service_events")
    op.drop_table("service_events")
