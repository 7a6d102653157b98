"""sites: Slurm clusters the platform sends work to

Revision ID: 0007
Revises: '0004'
Create Date: 2026-12-05 03:20:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("login", sa.String(length=255), nullable=True),
        sa.Column("identity_path", sa.Text(), nullable=True),
        sa.Column("known_hosts", sa.Text(), nullable=False),
        sa.Column("partition", sa.String(length=63), nullable=True),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("account_map", _json(), nullable=False),
        sa.Column("max_jobs", sa.Integer(), nullable=True),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("partitions", _json(), nullable=False),
        sa.Column("capacity", _json(), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unreachable_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )


def downgrade() -> None:
    op.drop_table("sites")
