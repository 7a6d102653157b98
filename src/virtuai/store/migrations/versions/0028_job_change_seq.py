"""jobs.change_seq: a change counter, so the scheduling pass reads only what changed

Revision ID: 0028
Revises: '0027'
Create Date: 2026-12-05 16:00:00.000000

The triggers that set it are installed (and kept current) by ``migrate()`` itself
(``store.changes.install_change_triggers``): their column list follows the model, and
SQLite's batch migrations, which copy a table, drop its triggers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | Sequence[str] | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("change_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    op.create_index("ix_jobs_change_seq", "jobs", ["change_seq"])


def downgrade() -> None:
    from virtuai.store.changes import drop_change_triggers

    drop_change_triggers(op.get_bind())
    op.drop_index("ix_jobs_change_seq", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP COLUMN change_seq")
