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

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from virtuai.control.gating import gate_pending
from virtuai.domain.clock import Clock
from virtuai.domain.vcluster import vc_job_id, vc_row_id
from virtuai.domain.workload import JobState
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import Admission, Blocked, Decisions, Policy, Preemption
from virtuai.store.db import read_session, transaction
from virtuai.store.fingerprint import FULL_PASS_EVERY_S, scheduling_fingerprint
from virtuai.store.inventory import placement_to_json
from virtuai.store.lease import limit_idle
from virtuai.store.models import JobRow, VirtualClusterRow
from virtuai.store.snapshot import build_snapshot, waiting_vcs
from virtuai.store.transitions import switch_job_state, update_vc_if_state

# How many of a job's preemptors it remembers (``JobRow.preempted_by``): the scheduler
# never lets it preempt them back.  Bounded so that a job preempted all week long does
# not grow a row without end; 32 distinct preemptors of one job is far beyond real load.
PREEMPTED_BY_KEPT = 32

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TickReport:
    admitted: int
    waiting: int
    preempted: int = 0


class PendingCache:
    """The queue between passes: each pass reads every pending job's id and ``updated_at``
    (two columns), and loads whole only the jobs that are new or changed since.

    Every state change sets ``updated_at``, and a cancel request takes the job out of
    the query, so a cached row is never older than its ``updated_at`` says.  The pass's
    own reason writes (which do not touch ``updated_at``) are copied in after commit.
    """

    def __init__(self) -> None:
        self._rows: dict[int, JobRow] = {}

    def read(self, session: Session) -> list[JobRow]:
        current = session.execute(
            select(JobRow.id, JobRow.updated_at, JobRow.restart_count)
            .where(JobRow.state == JobState.PENDING.value)
            .where(JobRow.cancel_requested_at.is_(None))
            .where(JobRow.vc_id.is_(None))
            .order_by(JobRow.id)
        ).all()
        stale = [
            job_id
            for job_id, updated_at, restarts in current
            if (row := self._rows.get(job_id)) is None
            or (row.updated_at, row.restart_count) != (updated_at, restarts)
        ]
        fresh: dict[int, JobRow] = {}
        for start in range(0, len(stale), 500):
            chunk = stale[start : start + 500]
            fresh.update(
                (row.id, row) for row in session.scalars(select(JobRow).where(JobRow.id.in_(chunk)))
            )
        rows = {
            job_id: fresh.get(job_id) or self._rows[job_id]
            for job_id, _, _ in current
            if job_id in fresh or job_id in self._rows
        }
        self._rows = rows
        return list(rows.values())

    def remember_reasons(self, reasons: dict[int, _Reason]) -> None:
        for job_id, (reason, position, expected) in reasons.items():
            row = self._rows.get(job_id)
            if row is not None:
                set_committed_value(row, "reason", reason)
                set_committed_value(row, "queue_position", position)
                set_committed_value(row, "expected_start_at", expected)


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
        # What the last full pass saw (store.fingerprint): an idle tick that finds the same
        # skips reading the whole queue again.
        self._seen: tuple[object, ...] | None = None
        self._seen_at = 0.0
        self._pending = PendingCache()

    def tick(self) -> TickReport:
        """A full pass, unless nothing the scheduler reads changed since the last one."""
        with read_session(self._sessions) as session:
            fingerprint = scheduling_fingerprint(session)
        now = self._clock.now().timestamp()
        if fingerprint == self._seen and now - self._seen_at < FULL_PASS_EVERY_S:
            return TickReport(0, 0)
        report = self._full_tick()
        if report.admitted or report.preempted:
            self._seen = None  # its own decisions changed the state: look again next tick
        else:
            # The digest read *before* the pass: a change committed while the pass ran (a
            # submit just after it read the queue) makes the next digest differ, so that
            # change is never left waiting for the next full pass.
            self._seen, self._seen_at = fingerprint, now
        return report

    def _full_tick(self) -> TickReport:
        # Read and decide without the write lock, so that submissions never queue behind a
        # pass that reads the whole queue; then apply in one short write transaction, as
        # compare-and-sets from the states read (what changed meanwhile is skipped, and
        # the next pass sees it).  Only rows whose reason or position changed are written.
        with read_session(self._sessions) as session:
            pending = self._pending.read(session)
            vcs = waiting_vcs(session)
            if not pending and not vcs:
                return TickReport(0, 0)
            now = self._clock.now()
            gate = gate_pending(session, pending, now, cancel_never=False)
            decisions = None
            if gate.schedulable or vcs:
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
        reasons: dict[int, _Reason] = {
            job.id: (gate.held[job.id], None, None) for job in pending if job.id in gate.held
        }
        with transaction(self._sessions) as session:
            if self._guard is not None:
                limit_idle(session)
            for job in pending:
                if job.id in gate.never:
                    switch_job_state(
                        session,
                        session.merge(job, load=False),
                        JobState.CANCELLED,
                        reason=gate.never[job.id],
                        now=now,
                        finished_at=now,
                        queue_position=None,
                    )
            report = TickReport(0, len(gate.held))
            if decisions is not None:
                report = self._apply(session, gate.schedulable, decisions, now, vcs, reasons)
            _write_reasons(session, pending, reasons)
            if self._guard is not None:
                # Last, just before the commit: the epoch is checked and held for as short a
                # time as can be, so a takeover rarely waits for us; if it moved, nothing of
                # this pass is written.
                self._guard(session)
        self._pending.remember_reasons(reasons)
        return report

    def _apply(
        self,
        session: Session,
        pending: list[JobRow],
        decisions: Decisions,
        now: dt.datetime,
        vcs: list[VirtualClusterRow],
        reasons: dict[int, _Reason],
    ) -> TickReport:
        """Record ``decisions`` about rows read in another session (merged here unloaded)."""
        by_id = {str(job.id): job for job in pending}
        vc_by_id = {vc_job_id(vc.id): vc for vc in vcs}
        admitted = 0
        for admission in decisions.admitted:
            if admission.job_id in vc_by_id:
                vc = session.merge(vc_by_id[admission.job_id], load=False)
                admitted += _admit_vc(session, vc, admission, now)
                continue
            job = session.merge(by_id[admission.job_id], load=False)
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
                _set_vc_reason(session.merge(vc_by_id[blocked.job_id], load=False), blocked)
                continue
            expected = (
                None
                if blocked.expected_start is None
                else dt.datetime.fromtimestamp(blocked.expected_start, dt.UTC)
            )
            reasons[int(blocked.job_id)] = (blocked.reason, blocked.position, expected)
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
        vc_id = vc_row_id(preemption.preemptor_id)
        preempted_by = list(victim.preempted_by or [])
        if vc_id is None:
            preempted_by = [*preempted_by, int(preemption.preemptor_id)][-PREEMPTED_BY_KEPT:]
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
                preempted_by=preempted_by,
            )
        if state not in (JobState.STARTING, JobState.RUNNING):
            return False
        return switch_job_state(
            session,
            victim,
            JobState.PREEMPTING,
            reason=preemption.reason,
            now=now,
            preempted_for=None if vc_id is not None else int(preemption.preemptor_id),
            preempted_for_vc=vc_id,
            preempted_by=preempted_by,
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


_Reason = tuple[str, int | None, dt.datetime | None]  # reason, queue position, expected start


def _write_reasons(session: Session, pending: list[JobRow], reasons: dict[int, _Reason]) -> None:
    """Pending reasons change often; they are state, not events.  Only changed rows are
    written, and only while the job is still pending."""
    changed = [
        {"_id": job.id, "_reason": r[0], "_position": r[1], "_expected": r[2]}
        for job in pending
        if (r := reasons.get(job.id)) is not None
        and (job.reason, job.queue_position, job.expected_start_at) != r
    ]
    if not changed:
        return
    jobs = JobRow.metadata.tables[JobRow.__tablename__]
    session.connection().execute(
        update(jobs)
        .where(jobs.c.id == bindparam("_id"), jobs.c.state == JobState.PENDING.value)
        .values(
            reason=bindparam("_reason"),
            queue_position=bindparam("_position"),
            expected_start_at=bindparam("_expected"),
        ),
        changed,
    )
