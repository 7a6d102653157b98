"""pool quotas, cohorts, fair share, preemption bookkeeping

Revision ID: 0003
Revises: '0002'
Create Date: 2026-11-22 02:49:41.277281
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("nominal_cpu_milli", sa.BigInteger(), nullable=True),
        sa.Column("nominal_memory", sa.BigInteger(), nullable=True),
        sa.Column("nominal_gpu", sa.Integer(), nullable=True),
        sa.Column("borrowing_cpu_milli", sa.BigInteger(), nullable=True),
        sa.Column("borrowing_memory", sa.BigInteger(), nullable=True),
        sa.Column("borrowing_gpu", sa.Integer(), nullable=True),
        sa.Column("lending_cpu_milli", sa.BigInteger(), nullable=True),
        sa.Column("lending_memory", sa.BigInteger(), nullable=True),
        sa.Column("lending_gpu", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_quotas_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "pool", name=op.f("pk_tenant_quotas")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preempted_for", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("expected_start_at", sa.DateTime(timezone=True), nullable=True)
        )
    # The tenant-wide quota moves into a row of its own, pool '*'.
    op.execute(
        "INSERT INTO tenant_quotas (tenant_id, pool, nominal_cpu_milli, nominal_memory, "
        "nominal_gpu) SELECT id, '*', quota_cpu_milli, quota_memory, quota_gpu FROM tenants"
    )
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("usage_cpu_milli_s", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("usage_memory_s", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("usage_gpu_s", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("usage_as_of", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.drop_column("quota_cpu_milli")
        batch_op.drop_column("quota_gpu")
        batch_op.drop_column("quota_memory")


def downgrade() -> None:
    # Copy the quotas back before any table is rebuilt: SQLite's batch mode drops and
    # recreates `tenants`, which would cascade into tenant_quotas.
    op.add_column("tenants", sa.Column("quota_cpu_milli", sa.BIGINT(), nullable=True))
    op.add_column("tenants", sa.Column("quota_memory", sa.BIGINT(), nullable=True))
    op.add_column("tenants", sa.Column("quota_gpu", sa.INTEGER(), nullable=True))
    op.execute(
        "UPDATE tenants SET "
        "quota_cpu_milli = (SELECT nominal_cpu_milli FROM tenant_quotas q "
        "WHERE q.tenant_id = tenants.id AND q.pool = '*'), "
        "quota_memory = (SELECT nominal_memory FROM tenant_quotas q "
        "WHERE q.tenant_id = tenants.id AND q.pool = '*'), "
        "quota_gpu = (SELECT nominal_gpu FROM tenant_quotas q "
        "WHERE q.tenant_id = tenants.id AND q.pool = '*')"
    )
    op.drop_table("tenant_quotas")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("expected_start_at")
        batch_op.drop_column("preempted_for")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("usage_as_of")
        batch_op.drop_column("usage_gpu_s")
        batch_op.drop_column("usage_memory_s")
        batch_op.drop_column("usage_cpu_milli_s")
