"""A cheap digest of the small tables the scheduler's decisions depend on.

The scheduling loop runs every second, or at once on a wake-up.  When nothing it
reads has changed, the scheduler would decide exactly what it decided last time,
so the loop skips the pass.  Jobs are followed by their change counter
(``store.changes``, an index scan of what changed); this digest covers the rest:
tenants, their quotas and fair-share bookkeeping, nodes, and virtual clusters
that are not deleted: small tables, read whole (a node's admin state, loss,
class and labels included).

What depends on time alone (fair-share decay, expected start times) is
refreshed by a full pass at least every ``FULL_PASS_EVERY_S``; with a policy
whose decisions time can change (a minimum run time, LAS levels, the starvation
guard) every ``TIMED_PASS_EVERY_S``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.store.models import NodeRow, TenantQuotaRow, TenantRow, VirtualClusterRow

FULL_PASS_EVERY_S = 60.0
TIMED_PASS_EVERY_S = 5.0


def small_tables_fingerprint(session: Session) -> tuple[Any, ...]:
    tenants = session.execute(
        select(
            TenantRow.id,
            TenantRow.weight,
            TenantRow.cohort,
            TenantRow.usage_as_of,
        ).order_by(TenantRow.id)
    ).all()
    quotas = session.execute(
        select(TenantQuotaRow).order_by(TenantQuotaRow.tenant_id, TenantQuotaRow.pool)
    ).scalars()
    nodes = session.execute(
        select(
            NodeRow.name,
            NodeRow.schedulable,
            NodeRow.cpu_milli,
            NodeRow.memory,
            NodeRow.gpus,
            NodeRow.pool,
            # Several machines: cordon, drain, loss and what a job may target.
            NodeRow.state,
            NodeRow.lost_at,
            NodeRow.node_class,
            NodeRow.labels,
        ).order_by(NodeRow.name)
    ).all()
    vcs = session.execute(
        select(
            VirtualClusterRow.id,
            VirtualClusterRow.state,
            VirtualClusterRow.admitted_at,
            VirtualClusterRow.updated_at,
        )
        .where(VirtualClusterRow.state != "deleted")
        .order_by(VirtualClusterRow.id)
    ).all()
    return (
        tuple(tuple(t) for t in tenants),
        tuple(_quota(q) for q in quotas),
        tuple(tuple(n) for n in nodes),
        tuple(tuple(v) for v in vcs),
    )


def _quota(row: TenantQuotaRow) -> tuple[Any, ...]:
    return tuple(getattr(row, column.key) for column in TenantQuotaRow.__table__.columns)
