"""Scheduling jobs inside virtual clusters: the same pure scheduler, on the cluster's own nodes.

A cluster already holds its nodes' resources (and its tenant's quota for
them), so its jobs are kept out of the platform's snapshot and scheduled by a
second ``schedule()`` call per cluster, whose nodes are the cluster's virtual
nodes (each with the cluster's per-node resources and the GPU indices placed
on it) and whose tenant has no quota limit.  The policy inside a cluster is
strict priority-FIFO: the tenant shares its own nodes, not the platform's.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.control.gating import gate_pending
from virtuai.domain.vcluster import VcState
from virtuai.domain.workload import JobState
from virtuai.scheduler import schedule
from virtuai.store.inventory import placement_to_json
from virtuai.store.models import JobRow, TenantRow, VirtualClusterRow
from virtuai.store.snapshot import vc_snapshot
from virtuai.store.transitions import switch_job_state


def schedule_vc_jobs(session: Session, now: dt.datetime) -> int:
    """Admit what fits in every running cluster; say why the others' jobs wait. Returns the
    number of jobs admitted."""
    pending = list(
        session.scalars(
            select(JobRow)
            .where(JobRow.vc_id.is_not(None), JobRow.state == JobState.PENDING.value)
            .where(JobRow.cancel_requested_at.is_(None))
            .order_by(JobRow.id)
        )
    )
    by_vc: dict[int, list[JobRow]] = defaultdict(list)
    for job in pending:
        assert job.vc_id is not None
        by_vc[job.vc_id].append(job)
    admitted = 0
    for vc_id, jobs in sorted(by_vc.items()):
        vc = session.get(VirtualClusterRow, vc_id)
        assert vc is not None
        state = VcState(vc.state)
        if state.is_finished() or state is VcState.DELETING:
            fail_jobs_of(session, vc, f"its virtual cluster {vc.name} is {state}", now)
        elif state is not VcState.RUNNING:
            for job in jobs:
                _set_reason(job, f"waiting for virtual cluster {vc.name} to run (it is {state})")
        else:
            admitted += _schedule_in(session, vc, jobs, now)
    return admitted


def fail_jobs_of(session: Session, vc: VirtualClusterRow, reason: str, now: dt.datetime) -> None:
    """Pending jobs of a cluster that will never run again end as failed."""
    for job in session.scalars(
        select(JobRow).where(JobRow.vc_id == vc.id, JobRow.state == JobState.PENDING.value)
    ):
        switch_job_state(
            session, job, JobState.FAILED, reason=reason, now=now, finished_at=now,
            queue_position=None,
        )  # fmt: skip


def _schedule_in(
    session: Session, vc: VirtualClusterRow, pending: Sequence[JobRow], now: dt.datetime
) -> int:
    tenant = session.get(TenantRow, vc.tenant_id)
    assert tenant is not None
    gate = gate_pending(session, pending, now)
    for job in pending:
        if job.id in gate.held:
            _set_reason(job, gate.held[job.id])
    if not gate.schedulable:
        return 0
    decisions = schedule(vc_snapshot(session, vc, tenant.name, gate.schedulable, now))
    by_id = {str(job.id): job for job in gate.schedulable}
    admitted = 0
    for admission in decisions.admitted:
        nodes = sorted({p.node for p in admission.placements})
        admitted += switch_job_state(
            session,
            by_id[admission.job_id],
            JobState.ADMITTED,
            reason=f"admitted to {', '.join(nodes)} of virtual cluster {vc.name}",
            now=now,
            placement=placement_to_json(admission.placements),
            admitted_at=now,
            queue_position=None,
            expected_start_at=None,
        )
    for blocked in decisions.blocked:
        _set_reason(by_id[blocked.job_id], blocked.reason, blocked.position)
    return admitted


def _set_reason(job: JobRow, reason: str, position: int | None = None) -> None:
    # Pending reasons change often; they are state, not events (as in the scheduling loop).
    if (job.reason, job.queue_position, job.expected_start_at) != (reason, position, None):
        job.reason = reason
        job.queue_position = position
        job.expected_start_at = None
