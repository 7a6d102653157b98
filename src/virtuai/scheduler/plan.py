"""What would happen to a job if it were submitted now, without submitting it.

``virtuai plan -f job.yaml`` (and the API behind it) answers: can it ever run
(and why not), would it start now and where, or else what it would wait for,
its place in the queue and when it should start.  The answer is exactly the
decision ``schedule()`` makes for it in the current snapshot, so it never
disagrees with what the scheduler then does (as long as nothing else changes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler import never
from virtuai.scheduler.core import schedule
from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.quota import QuotaLedger
from virtuai.scheduler.reasons import NEVER_PREFIX
from virtuai.scheduler.snapshot import BlockKind, PendingJob, Preemption, Snapshot

__all__ = ["Plan", "never_reason", "plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    job_id: str
    can_ever_run: bool
    starts_now: bool
    placements: tuple[TaskPlacement, ...] = ()  # where, if it starts now
    kind: BlockKind | None = None  # what it would wait for (None: starts now)
    reason: str | None = None  # why it cannot ever run, or why it would wait
    position: int | None = None  # 1-based among the jobs that would still wait
    expected_start: float | None = None  # now if it starts now; the reservation's start
    # Running jobs it would preempt (it then starts once they have stopped).
    preemptions: tuple[Preemption, ...] = ()


def plan(snapshot: Snapshot, job: PendingJob) -> Plan:
    """The decision ``schedule()`` would make for ``job`` if it joined ``snapshot.pending``.

    A pending job with the same id is replaced (so an existing job can be
    re-planned).  Costs one scheduling pass.
    """
    pending = (*(j for j in snapshot.pending if j.id != job.id), job)
    decisions = schedule(replace(snapshot, pending=pending))
    preemptions = tuple(p for p in decisions.preempted if p.preemptor_id == job.id)
    for admission in decisions.admitted:
        if admission.job_id == job.id:
            return Plan(
                job.id,
                can_ever_run=True,
                starts_now=True,
                placements=admission.placements,
                expected_start=snapshot.now,
            )
    blocked = next(b for b in decisions.blocked if b.job_id == job.id)
    return Plan(
        job.id,
        can_ever_run=blocked.kind is not BlockKind.NEVER,
        starts_now=False,
        kind=blocked.kind,
        reason=blocked.reason,
        position=blocked.position,
        expected_start=blocked.expected_start,
        preemptions=preemptions,
    )


def never_reason(snapshot: Snapshot, job: PendingJob) -> str | None:
    """Why ``job`` could never run in this cluster under its tenant's quotas, or ``None``.

    The submit-time check with cohorts: a job above its tenant's nominal quota
    but within what it may borrow is accepted (unless it cannot be preempted and the
    policy preempts: such a job never borrows).  The words are the ``NEVER``
    reason's, with the ``"can never run: "`` prefix.
    """
    pool_of = {s.node.name: s.node.pool for s in snapshot.nodes}
    ledger = QuotaLedger(snapshot.tenants, (), pool_of, borrowing=snapshot.policy.borrowing)
    may_borrow = snapshot.policy.lets_borrow(job)
    feasibility = Feasibility(s.node for s in snapshot.nodes)
    reason = never.never_reason(feasibility, ledger, job, may_borrow=may_borrow)
    return None if reason is None else NEVER_PREFIX + reason
