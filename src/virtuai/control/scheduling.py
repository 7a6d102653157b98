"""The scheduling loop: snapshot from the database -> pure scheduler -> recorded decisions."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.gating import gate_pending
from virtuai.domain.clock import Clock
from virtuai.domain.resources import Resources
from virtuai.domain.workload import JobState
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import Decisions, PendingJob, Snapshot, TenantState
from virtuai.store.db import transaction
from virtuai.store.inventory import load_node_states, placement_to_json
from virtuai.store.models import JobRow, TenantRow
from virtuai.store.tenancy import quota_of, usage_by_tenant
from virtuai.store.transitions import switch_job_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TickReport:
    admitted: int
    waiting: int


class SchedulingLoop:
    """One tick admits what fits now and tells every waiting job why it waits.

    The tick is idempotent: it reads everything it needs in one transaction
    and applies admissions as compare-and-set transitions from ``pending``,
    so a job cancelled meanwhile is simply skipped.
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def tick(self) -> TickReport:
        with transaction(self._sessions) as session:
            pending = list(
                session.scalars(
                    select(JobRow)
                    .where(JobRow.state == JobState.PENDING.value)
                    .where(JobRow.cancel_requested_at.is_(None))
                )
            )
            if not pending:
                return TickReport(0, 0)
            gate = gate_pending(session, pending, self._clock.now())
            for job in pending:
                if job.id in gate.held:
                    _set_reason(job, gate.held[job.id], None)
            if not gate.schedulable:
                return TickReport(0, len(gate.held))
            snapshot = self._snapshot(session, gate.schedulable)
            decisions = schedule(snapshot)
            return self._apply(session, gate.schedulable, decisions)

    def _snapshot(self, session: Session, pending: list[JobRow]) -> Snapshot:
        tenants = list(session.scalars(select(TenantRow)))
        usage = usage_by_tenant(session)
        names = {t.id: t.name for t in tenants}
        return Snapshot(
            nodes=tuple(load_node_states(session)),
            tenants=tuple(
                TenantState(name=t.name, quota=quota_of(t), usage=usage[t.id])
                if t.id in usage
                else TenantState(name=t.name, quota=quota_of(t))
                for t in tenants
            ),
            pending=tuple(
                PendingJob(
                    id=str(job.id),
                    tenant=names[job.tenant_id],
                    priority=job.priority,
                    submitted_at=job.submitted_at.timestamp(),
                    seq=job.id,
                    per_task=_per_task(job),
                    tasks=job.tasks,
                    pool=job.pool,
                )
                for job in pending
            ),
        )

    def _apply(self, session: Session, pending: list[JobRow], decisions: Decisions) -> TickReport:
        now = self._clock.now()
        by_id = {str(job.id): job for job in pending}
        admitted = 0
        for admission in decisions.admitted:
            job = by_id[admission.job_id]
            nodes = sorted({p.node for p in admission.placements})
            if switch_job_state(
                session,
                job,
                JobState.ADMITTED,
                reason=f"admitted to {', '.join(nodes)}",
                now=now,
                placement=placement_to_json(admission.placements),
                admitted_at=now,
                queue_position=None,
            ):
                admitted += 1
        for blocked in decisions.blocked:
            job = by_id[blocked.job_id]
            _set_reason(job, blocked.reason, blocked.position)
        if admitted:
            log.info("admitted %d job(s); %d waiting", admitted, len(decisions.blocked))
        return TickReport(admitted, len(decisions.blocked))


def _per_task(job: JobRow) -> Resources:
    return Resources(job.cpu_milli, job.memory, job.gpu)


def _set_reason(job: JobRow, reason: str, position: int | None) -> None:
    # Pending reasons change often; they are state, not events.
    if job.reason != reason or job.queue_position != position:
        job.reason = reason
        job.queue_position = position
