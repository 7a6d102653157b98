"""services.crashes, crash_generation, retry_at: a crash loop's back-off, in the database

Replicas in a row that ended before they were ready, the spec generation they were of,
and when the next replica may start.  They were held in the leader's memory, so a new
leader (or the same server restarted) started the next replica at once.

Revision ID: 0032
Revises: '0031'
Create Date: 2026-12-06 09:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032"
down_revision: str | Sequence[str] | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs, not a batch: a batch may rebuild the table on SQLite, and a rebuild
    # drops its AUTOINCREMENT (ids never reused, 0031).
    op.add_column(
        "services", sa.Column("crashes", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("services", sa.Column("crash_generation", sa.Integer(), nullable=True))
    op.add_column("services", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("retry_at", "crash_generation", "crashes"):
        op.execute(f"ALTER TABLE services DROP COLUMN {column}")
