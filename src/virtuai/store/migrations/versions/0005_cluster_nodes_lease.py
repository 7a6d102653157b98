"""many machines: nodes register and heartbeat, one scheduling lease with a fencing epoch,
jobs target node classes and labels, tasks record the machine that runs them

Revision ID: 0005
Revises: '0004'
Create Date: 2026-12-05 03:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("node_class", sa.String(length=16), nullable=False, server_default="light")
        )
        batch_op.add_column(sa.Column("labels", _JSON, nullable=False, server_default="{}"))
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="ready")
        )
        batch_op.add_column(
            sa.Column("drain_requeue", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("heartbeat_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column(
                "address", sa.String(length=255), nullable=False, server_default=sa.text("''")
            )
        )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("holder_node", sa.String(length=128), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("renew_seq", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_class", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("constraints", _JSON, nullable=False, server_default="[]"))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_tasks_host"), ["host"], unique=False)
    # Every task so far ran on the machine named by its node (virtual nodes aside, which
    # only this one machine could host).
    op.execute("UPDATE tasks SET host = node WHERE host IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_host"))
        batch_op.drop_column("host")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("constraints")
        batch_op.drop_column("node_class")
    op.drop_table("leases")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for column in (
            "address",
            "heartbeat_seq",
            "heartbeat_at",
            "lost_at",
            "drain_requeue",
            "state",
            "labels",
            "node_class",
        ):
            batch_op.drop_column(column)
