"""A cheap digest of everything the scheduler's decisions depend on.

The scheduling loop runs every second.  Reading a queue of 10,000 pending
jobs and building the snapshot costs far more than one second of CPU per
minute, yet when nothing has changed the scheduler would decide exactly what
it decided last time.  This digest, read with a handful of aggregate queries
(the job part walks the ``state`` index of unfinished jobs only), tells the
loop whether anything it reads has changed since its last pass:

- unfinished jobs: how many, which (sum of ids), how many in each state, the
  latest state change (every transition sets ``updated_at``) and the latest
  cancel request;
- tenants, their quotas and fair-share bookkeeping, nodes, and virtual
  clusters that are not deleted: small tables, read whole (a node's admin state,
  loss, class and labels included).

Anything that changes what the scheduler would decide changes one of these.
What depends on time alone (fair-share decay, expected start times) is
refreshed by a full pass at least every ``FULL_PASS_EVERY_S``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.domain.workload import FINISHED_STATES
from virtuai.store.models import JobRow, NodeRow, TenantQuotaRow, TenantRow, VirtualClusterRow

FULL_PASS_EVERY_S = 60.0


def scheduling_fingerprint(session: Session) -> tuple[Any, ...]:
    unfinished = JobRow.state.not_in([s.value for s in FINISHED_STATES])
    jobs = session.execute(
        select(
            func.count(JobRow.id),
            func.sum(JobRow.id),
            func.max(JobRow.updated_at),
            func.max(JobRow.cancel_requested_at),
        ).where(unfinished)
    ).one()
    # How many jobs are in each state: a transition committed late, with an ``updated_at``
    # older than the newest one already seen (another thread's clock read came first),
    # leaves the max unchanged, yet a job that started may release its dependants.
    by_state = session.execute(
        select(JobRow.state, func.count(JobRow.id))
        .where(unfinished)
        .group_by(JobRow.state)
        .order_by(JobRow.state)
    ).all()
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
        tuple(jobs),
        tuple(tuple(row) for row in by_state),
        tuple(tuple(t) for t in tenants),
        tuple(_quota(q) for q in quotas),
        tuple(tuple(n) for n in nodes),
        tuple(tuple(v) for v in vcs),
    )


def _quota(row: TenantQuotaRow) -> tuple[Any, ...]:
    return tuple(getattr(row, column.key) for column in TenantQuotaRow.__table__.columns)
