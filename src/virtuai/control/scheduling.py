"""The scheduling loop: snapshot from the database -> pure scheduler -> recorded decisions.

Virtual clusters waiting for admission (``creating`` or ``resuming``, not yet
placed) join the snapshot as gangs with the id ``vc-<row id>``; decisions for
those ids are recorded on the cluster's row (``_admit_vc``).  Jobs inside a
virtual cluster are not scheduled here but by ``control.vclusters``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.gating import gate_pending
from virtuai.domain.clock import Clock
from virtuai.domain.vcluster import vc_job_id, vc_row_id
from virtuai.domain.workload import JobState
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import Admission, Blocked, Decisions, Policy, Preemption
from virtuai.store.db import transaction
from virtuai.store.inventory import placement_to_json
from virtuai.store.lease import limit_idle
from virtuai.store.models import JobRow, VirtualClusterRow
from virtuai.store.snapshot import build_snapshot, waiting_vcs
from virtuai.store.transitions import switch_job_state, update_vc_if_state

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TickReport:
    admitted: int
    waiting: int
    preempted: int = 0


class SchedulingLoop:
    """One tick admits what fits now, preempts what the policy says must make room, and
    tells every waiting job why it waits.

    The tick is idempotent: it reads everything it needs in one transaction
    and applies every decision as a compare-and-set transition from the state
    it was read in, so a job cancelled or ended meanwhile is simply skipped.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        policy: Policy | None = None,
        preemptible: Mapping[str, bool] | None = None,
        guard: Callable[[Session], None] | None = None,
        max_walltime_by_class: Mapping[str, int] | None = None,
    ) -> None:
        self._max_walltime_by_class = max_walltime_by_class or {}
        self._sessions = sessions
        # Several machines: the lease's fencing check, first in every transaction (it raises
        # ``NotLeader`` once another instance has taken over, so nothing of ours is written).
        self._guard = guard
        self._clock = clock
        self._policy = policy or Policy()
        self._preemptible = preemptible or {}

    def tick(self) -> TickReport:
        with transaction(self._sessions) as session:
            if self._guard is not None:
                limit_idle(session)
            report = self._tick(session)
            if self._guard is not None:
                # Last, just before the commit: the epoch is checked and held for as short a
                # time as can be, so a takeover rarely waits for us; if it moved, nothing of
                # this pass is written.
                self._guard(session)
            return report

    def _tick(self, session: Session) -> TickReport:
        pending = list(
            session.scalars(
                select(JobRow)
                .where(JobRow.state == JobState.PENDING.value)
                .where(JobRow.cancel_requested_at.is_(None))
                .where(JobRow.vc_id.is_(None))
            )
        )
        vcs = waiting_vcs(session)
        if not pending and not vcs:
            return TickReport(0, 0)
        now = self._clock.now()
        gate = gate_pending(session, pending, now)
        for job in pending:
            if job.id in gate.held:
                _set_reason(job, gate.held[job.id], None, None)
        if not gate.schedulable and not vcs:
            return TickReport(0, len(gate.held))
        snapshot = build_snapshot(
            session,
            now=now,
            policy=self._policy,
            preemptible=self._preemptible,
            pending=gate.schedulable,
            pending_vcs=vcs,
            max_walltime_by_class=self._max_walltime_by_class,
        )
        decisions = schedule(snapshot)
        return self._apply(session, gate.schedulable, decisions, now, vcs)

    def _apply(
        self,
        session: Session,
        pending: list[JobRow],
        decisions: Decisions,
        now: dt.datetime,
        vcs: list[VirtualClusterRow] | None = None,
    ) -> TickReport:
        by_id = {str(job.id): job for job in pending}
        vc_by_id = {vc_job_id(vc.id): vc for vc in vcs or ()}
        admitted = 0
        for admission in decisions.admitted:
            if admission.job_id in vc_by_id:
                admitted += _admit_vc(session, vc_by_id[admission.job_id], admission, now)
                continue
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
                expected_start_at=None,
            ):
                admitted += 1
        for blocked in decisions.blocked:
            if blocked.job_id in vc_by_id:
                _set_vc_reason(vc_by_id[blocked.job_id], blocked)
                continue
            expected = (
                None
                if blocked.expected_start is None
                else dt.datetime.fromtimestamp(blocked.expected_start, dt.UTC)
            )
            _set_reason(by_id[blocked.job_id], blocked.reason, blocked.position, expected)
        preempted = sum(self._preempt(session, p, now) for p in decisions.preempted)
        if admitted or preempted:
            log.info(
                "admitted %d job(s), preempted %d; %d waiting",
                admitted,
                preempted,
                len(decisions.blocked),
            )
        return TickReport(admitted, len(decisions.blocked), preempted)

    @staticmethod
    def _preempt(session: Session, preemption: Preemption, now: dt.datetime) -> bool:
        """Tell a victim to stop; one admitted but not started goes straight back to the queue."""
        if vc_row_id(preemption.job_id) is not None:
            return False  # virtual clusters are never preemptible (the snapshot says so)
        victim = session.get(JobRow, int(preemption.job_id))
        if victim is None:
            return False
        state = JobState(victim.state)
        if state is JobState.ADMITTED:
            return switch_job_state(
                session,
                victim,
                JobState.PENDING,
                reason=f"requeued: {preemption.reason}",
                now=now,
                placement=[],
                admitted_at=None,
                master_port=None,
            )
        if state not in (JobState.STARTING, JobState.RUNNING):
            return False
        vc_id = vc_row_id(preemption.preemptor_id)
        return switch_job_state(
            session,
            victim,
            JobState.PREEMPTING,
            reason=preemption.reason,
            now=now,
            preempted_for=None if vc_id is not None else int(preemption.preemptor_id),
            preempted_for_vc=vc_id,
        )


def _admit_vc(
    session: Session, vc: VirtualClusterRow, admission: Admission, now: dt.datetime
) -> bool:
    """Record the placement; the cluster loop builds (or resumes) it on the nodes."""
    nodes = sorted({p.node for p in admission.placements})
    return update_vc_if_state(
        session,
        vc,
        reason=f"admitted to {', '.join(nodes)}",
        now=now,
        placement=placement_to_json(admission.placements),
        admitted_at=now,
        queue_position=None,
    )


def _set_vc_reason(vc: VirtualClusterRow, blocked: Blocked) -> None:
    # Waiting reasons change often; they are state, not events (as for jobs).  The
    # scheduler speaks of a gang's tasks: a cluster's are its nodes.
    reason = blocked.reason.replace("tasks", "nodes").replace("task", "node")
    if (vc.reason, vc.queue_position) != (reason, blocked.position):
        vc.reason = reason
        vc.queue_position = blocked.position


def _set_reason(
    job: JobRow, reason: str, position: int | None, expected_start: dt.datetime | None
) -> None:
    # Pending reasons change often; they are state, not events.
    if (job.reason, job.queue_position, job.expected_start_at) != (
        reason,
        position,
        expected_start,
    ):
        job.reason = reason
        job.queue_position = position
        job.expected_start_at = expected_start
