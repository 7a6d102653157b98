"""virtual clusters: their table and events; jobs may run in one

Revision ID: 0004
Revises: '0003'
Create Date: 2026-11-22 03:27:51.459662
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# A live cluster (not deleted, not failed) owns its name in its tenant, and its subnet.
LIVE = "state NOT IN ('deleted', 'failed')"

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "virtual_clusters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("runtime_id", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("cpu_milli", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("image", sa.String(length=63), nullable=False),
        sa.Column("gateway", sa.Boolean(), nullable=False),
        sa.Column("subnet", sa.String(length=43), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "placement",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue_position", sa.Integer(), nullable=True),
        sa.Column(
            "observed",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_virtual_clusters_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_virtual_clusters_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_virtual_clusters")),
        sa.UniqueConstraint("runtime_id", name=op.f("uq_virtual_clusters_runtime_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("virtual_clusters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_virtual_clusters_state"), ["state"], unique=False)
        batch_op.create_index(
            "ix_virtual_clusters_live_name",
            ["tenant_id", "name"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
        batch_op.create_index(
            "ix_virtual_clusters_live_subnet",
            ["subnet"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )

    op.create_table(
        "vc_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vc_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["vc_id"],
            ["virtual_clusters.id"],
            name=op.f("fk_vc_events_vc_id_virtual_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vc_events")),
    )
    with op.batch_alter_table("vc_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vc_events_vc_id"), ["vc_id"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preempted_for_vc", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("vc_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_vc_id"), ["vc_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_vc_id_virtual_clusters"), "virtual_clusters", ["vc_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_vc_id_virtual_clusters"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_vc_id"))
        batch_op.drop_column("vc_id")
        batch_op.drop_column("preempted_for_vc")

    with op.batch_alter_table("vc_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vc_events_vc_id"))

    op.drop_table("vc_events")
    with op.batch_alter_table("virtual_clusters", schema=None) as batch_op:
        batch_op.drop_index("ix_virtual_clusters_live_subnet")
        batch_op.drop_index("ix_virtual_clusters_live_name")
        batch_op.drop_index(batch_op.f("ix_virtual_clusters_state"))

    op.drop_table("virtual_clusters")
