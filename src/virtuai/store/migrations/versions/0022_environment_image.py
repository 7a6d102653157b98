"""environments.image: an environment built for the jobs over an image (env create --image)

Revision ID: 0022
Revises: '0021'
Create Date: 2026-12-05 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("image", sa.String(63), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE environments DROP COLUMN image")
