"""The scheduling loop: snapshot from the database -> pure scheduler -> recorded decisions.

Virtual clusters waiting for admission (``creating`` or ``resuming``, not yet
placed) join the snapshot as gangs with the id ``vc-<row id>``; decisions for
those ids are recorded on the cluster's row (``_admit_vc``).  Jobs inside a
virtual cluster are not scheduled here but by ``control.vclusters``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from virtuai.control.gating import Gate, gate_pending
from virtuai.domain.clock import Clock
from virtuai.domain.vcluster import vc_job_id, vc_row_id
from virtuai.domain.workload import JobState
from virtuai.scheduler import schedule
from virtuai.scheduler.queue import due_by
from virtuai.scheduler.snapshot import (
    Admission,
    Blocked,
    BlockKind,
    Decisions,
    PendingJob,
    Policy,
    Preemption,
    Snapshot,
)
from virtuai.store.changes import change_horizon
from virtuai.store.db import read_session, transaction
from virtuai.store.fingerprint import (
    FULL_PASS_EVERY_S,
    TIMED_PASS_EVERY_S,
    small_tables_fingerprint,
)
from virtuai.store.inventory import placement_to_json
from virtuai.store.lease import limit_idle
from virtuai.store.models import JobRow, VirtualClusterRow
from virtuai.store.snapshot import build_snapshot, new_pending_views, waiting_vcs
from virtuai.store.transitions import lock_unheld, switch_job_state, update_vc_if_state

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
    # Rows the pass left alone because another transaction held them (#7): the next tick
    # runs a pass again even if nothing changed.
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class Tail:
    """The last job a pass decided, when that pass admitted and preempted nothing and the
    job waits for its tenant's quota: a new job just like it (``SchedulingLoop``'s
    newcomer shortcut) would be decided right after it, the same way."""

    job: PendingJob
    blocked: Blocked


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass read and decided, before anything is written."""

    pending: list[JobRow]
    vcs: list[VirtualClusterRow]
    now: dt.datetime
    gate: Gate
    decisions: Decisions | None
    tail: Tail | None = None


class PendingCache:
    """The queue between passes, kept in memory and refreshed by what changed.

    Each refresh reads the jobs whose ``change_seq`` (set by the database on every
    insert and every update of what the scheduler reads: ``store.changes``) is at or
    above the horizon of the last refresh: an index scan of the few rows that changed,
    not the whole queue.  Those that are (still) schedulable pending jobs are loaded
    whole; the others leave the cache.  The pass's own reason writes do not count as
    changes; they are copied into the cached rows after commit.

    Rebuilt from scratch when first used, when ``invalidate``d (a new lease epoch, a
    failed pass), and every ``rebuild_every_s`` as a safety net.  The cache only chooses
    what to consider: every decision is still a compare-and-set from the state read,
    fenced by the lease epoch, so a row that changed meanwhile is skipped, never
    overwritten.
    """

    def __init__(self, rebuild_every_s: float = FULL_PASS_EVERY_S) -> None:
        self._rows: dict[int, JobRow] = {}
        self._horizon: int | None = None
        # Rows read at or above the current horizon, by id: on PostgreSQL a row stays
        # above it until every older transaction has ended, and is read again meanwhile.
        self._seen: dict[int, int] = {}
        self._rebuild_every_s = rebuild_every_s
        self._rebuilt_at = 0.0
        self.rebuilds = 0  # how many times it was read whole (tests, metrics)
        # The greatest job id the cache has heard of (every job, any state): a changed row
        # above it was inserted since.  What the last refresh brought: the ids of the new
        # pending jobs when nothing else changed, else None (``SchedulingLoop``'s shortcut).
        self._max_id = 0
        self.newcomers: list[int] | None = None

    def invalidate(self) -> None:
        self._horizon = None

    def rows(self) -> list[JobRow]:
        return sorted(self._rows.values(), key=lambda row: row.id)

    def refresh(self, session: Session) -> bool:
        """Bring the cache up to ``session``'s view; True when a job changed (or on a rebuild)."""
        horizon = change_horizon(session)  # before the rows: see store.changes
        mono = time.monotonic()
        self.newcomers = None
        if self._horizon is None:
            self._rebuild(session, horizon, mono)
            return True
        # Jobs inside virtual clusters too: one may be what a platform job depends on.
        changed = session.execute(
            select(
                JobRow.id, JobRow.change_seq, JobRow.state, JobRow.cancel_requested_at, JobRow.vc_id
            ).where(JobRow.change_seq >= self._horizon)
        ).all()
        fresh = [row for row in changed if self._seen.get(row.id) != row.change_seq]
        for row in fresh:
            self._seen[row.id] = row.change_seq
            self._rows.pop(row.id, None)
        wanted = [
            row.id
            for row in fresh
            if row.state == JobState.PENDING
            and row.cancel_requested_at is None
            and row.vc_id is None
        ]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for job in session.scalars(select(JobRow).where(JobRow.id.in_(chunk))):
                # Read again in this snapshot: still what the change feed said.
                if job.state == JobState.PENDING and job.cancel_requested_at is None:
                    self._rows[job.id] = job
        self._seen = {i: seq for i, seq in self._seen.items() if seq >= horizon}
        self._horizon = horizon
        # New pending jobs and nothing else: the ids above every one heard of (a row
        # inserted out of id order, as PostgreSQL may commit them, only costs a full pass).
        new = [row.id for row in fresh if row.id > self._max_id]
        if fresh and len(new) == len(fresh) and all(row.id in self._rows for row in fresh):
            self.newcomers = sorted(new)
        self._max_id = max([self._max_id, *(row.id for row in fresh)])
        if mono - self._rebuilt_at >= self._rebuild_every_s:
            self._rebuild(session, horizon, mono)
            self.newcomers = None
        return bool(fresh)

    def _rebuild(self, session: Session, horizon: int, mono: float) -> None:
        rows = {
            row.id: row
            for row in session.scalars(
                select(JobRow)
                .where(JobRow.state == JobState.PENDING.value)
                .where(JobRow.cancel_requested_at.is_(None))
                .where(JobRow.vc_id.is_(None))
            )
        }
        if self._horizon is not None and _versions(rows) != _versions(self._rows):
            # Just brought up to date in this snapshot, so a difference is a write the
            # change feed did not show (or, on PostgreSQL, one committed between the two
            # statements): the safety net at work.
            log.info("the pending-job cache differed from the database; read whole again")
        self._rows, self._seen = rows, {}
        self._horizon, self._rebuilt_at = horizon, mono
        self._max_id = session.scalar(select(func.max(JobRow.id))) or 0
        self.rebuilds += 1

    def get(self, job_id: int) -> JobRow | None:
        return self._rows.get(job_id)

    def remember_reasons(self, reasons: dict[int, _Reason]) -> None:
        for job_id, (reason, position, expected) in reasons.items():
            row = self._rows.get(job_id)
            if row is not None:
                set_committed_value(row, "reason", reason)
                set_committed_value(row, "queue_position", position)
                set_committed_value(row, "expected_start_at", expected)


def _versions(rows: Mapping[int, JobRow]) -> dict[int, int]:
    return {job_id: row.change_seq for job_id, row in rows.items()}


def pass_every_s(policy: Policy) -> float:
    """How long an idle server may go without a pass.  Decisions that time alone can
    change (a job reaching its minimum run time, a LAS level, the starvation guard)
    need a pass soon after; otherwise only shown reasons and expected starts age."""
    timed = policy.preemption and (
        policy.min_run_s > 0 or bool(policy.las_thresholds_gpu_s) or policy.starvation_factor > 0
    )
    return TIMED_PASS_EVERY_S if timed else FULL_PASS_EVERY_S


class SchedulingLoop:
    """One tick admits what fits now, preempts what the policy says must make room, and
    tells every waiting job why it waits.

    The tick is idempotent: it reads everything it needs in one transaction
    and applies every decision as a compare-and-set transition from the state
    it was read in, so a job cancelled or ended meanwhile is simply skipped.

    Event-driven: a tick first reads what changed since the last (jobs by their change
    counter, and the small tables: tenants, quotas, nodes, virtual clusters); when
    nothing did and no time-driven pass is due, it does nothing more.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        policy: Policy | None = None,
        preemptible: Mapping[str, bool] | None = None,
        guard: Callable[[Session], None] | None = None,
        max_walltime_by_class: Mapping[str, int] | None = None,
        epoch: Callable[[], int | None] | None = None,
    ) -> None:
        self._max_walltime_by_class = max_walltime_by_class or {}
        self._sessions = sessions
        # Several machines: the lease's fencing check, first in every transaction (it raises
        # ``NotLeader`` once another instance has taken over, so nothing of ours is written).
        self._guard = guard
        # The lease epoch the cache was built under: another one means another leader may
        # have decided meanwhile, so the cache is read whole again.
        self._epoch = epoch
        self._cached_epoch: int | None = None
        self._clock = clock
        self._policy = policy or Policy()
        self._preemptible = preemptible or {}
        # What the last pass saw of the small tables (store.fingerprint), and whether it
        # ended well: an idle tick that finds no change skips the pass.
        self._seen: tuple[object, ...] | None = None
        self._seen_at = 0.0
        self._pass_every_s = pass_every_s(self._policy)
        self._pending = PendingCache()
        # What the last pass decided last, when new jobs like it may skip a pass.
        self._tail: Tail | None = None
        self.shortcuts = 0  # passes the newcomer shortcut replaced (tests, benchmarks)
        # The scheduler's view of each cached job, kept while the row is unchanged.
        self._converted: dict[int, tuple[tuple[object, ...], PendingJob]] = {}

    def tick(self) -> TickReport:
        """A full pass, unless nothing the scheduler reads changed since the last one, or
        only new jobs arrived that wait behind the last one for their tenant's quota."""
        epoch = None if self._epoch is None else self._epoch()
        if epoch != self._cached_epoch:
            self._pending.invalidate()
            self._cached_epoch, self._seen, self._tail = epoch, None, None
        # One read-only session for the look at what changed and, if anything did, for the
        # pass's reads and decisions: no lock held, and one snapshot for both.
        with read_session(self._sessions) as session:
            jobs_changed = self._pending.refresh(session)
            fingerprint = small_tables_fingerprint(session)
            now = self._clock.now().timestamp()
            quiet = fingerprint == self._seen and now - self._seen_at < self._pass_every_s
            if not jobs_changed and quiet:
                return TickReport(0, 0)
            try:
                plan = None
                newcomers = self._pending.newcomers
                if quiet and newcomers and self._tail is not None:
                    plan = self._newcomers_plan(session, newcomers, self._tail)
                shortcut = plan is not None
                if plan is None:
                    self._seen, self._tail = None, None  # until this pass has ended well
                    plan = self._decide(session)
            except Exception:
                self._pending.invalidate()
                self._tail = None
                raise
        try:
            report = self._full_tick(plan)
        except Exception:
            self._pending.invalidate()  # what it wrote is unknown: read everything again
            self._seen, self._tail = None, None
            raise
        self._tail = None if plan is None else plan.tail
        if shortcut:
            assert self._tail is not None
            self.shortcuts += 1
            if report.skipped:
                self._seen = None  # as below: a held row's holder may end without a change
            return TickReport(0, self._tail.blocked.position, skipped=report.skipped)
        # The digest read *before* the pass: a change committed while the pass ran makes
        # the next one differ (jobs: their change counter is above the horizon read).  A
        # pass that skipped held rows is not done: their holder may end without a change.
        self._seen, self._seen_at = (None if report.skipped else fingerprint), now
        return report

    def _newcomers_plan(self, session: Session, ids: list[int], tail: Tail) -> Plan | None:
        """The newcomer shortcut: the decisions of a full pass, without one, when the only
        change since the last pass is new jobs that would be decided after its last job,
        and the same way: waiting for their tenant's quota, each one place further back.

        It holds when every new job's view is the last job's but for its id, submission
        time and ``seq``, and comes after it in the queue order: the last pass admitted
        and preempted nothing (``Tail``), so a pass now would take every job before them
        in the same state and decide each as before (the scheduler is deterministic),
        reach the new ones last with the state it had after the last job (a job blocked
        for quota changes none of it), and decide them as it (same tenant, shape, limit,
        priority and class; ``_Pass.memo`` relies on the same).  Nothing else changed:
        the small tables' digest, the time-driven pass not due, and no job but the new
        ones (``PendingCache.newcomers``).  New jobs that the gate might hold (with
        dependencies, in an array, staging data) take the full pass.  None: not so."""
        policy = self._policy
        if not policy.report_blocked or policy.las_thresholds_gpu_s:
            return None
        rows = [self._pending.get(i) for i in ids]
        jobs = [row for row in rows if row is not None]
        if len(jobs) != len(rows) or any(
            job.dependencies or job.array_id is not None or job.stage for job in jobs
        ):
            return None
        due = due_by(policy.short_first_cap_s) if policy.short_first_cap_s > 0 else None

        def order(job: PendingJob) -> tuple[float, float, int, str]:
            return (
                job.submitted_at if due is None else due(job),
                job.submitted_at,
                job.seq,
                job.id,
            )

        views = new_pending_views(session, jobs, self._preemptible, self._max_walltime_by_class)
        like = tail.job
        blocked: list[Blocked] = []
        last = tail
        for view in sorted(views, key=order):
            if replace(view, id=like.id, submitted_at=like.submitted_at, seq=like.seq) != like:
                return None
            if order(view) <= order(last.job):
                return None
            last = Tail(
                view, replace(tail.blocked, job_id=view.id, position=last.blocked.position + 1)
            )
            blocked.append(last.blocked)
        decisions = Decisions(blocked=tuple(blocked))
        return Plan(jobs, [], self._clock.now(), Gate(schedulable=jobs), decisions, last)

    def plan(self) -> Plan | None:
        """Read and decide, writing nothing: what a pass would do now (None: nothing waits).

        From the cache brought up to date; a loop made afresh decides from a whole read of
        the database, and the two must agree (the hypothesis property of the tests)."""
        with read_session(self._sessions) as session:
            self._pending.refresh(session)
            return self._decide(session)

    def _decide(self, session: Session) -> Plan | None:
        pending = self._pending.rows()
        vcs = waiting_vcs(session)
        if not pending and not vcs:
            return None
        now = self._clock.now()
        gate = gate_pending(session, pending, now, cancel_never=False)
        decisions, snapshot = None, None
        if gate.schedulable or vcs:
            snapshot = build_snapshot(
                session,
                now=now,
                policy=self._policy,
                preemptible=self._preemptible,
                pending=gate.schedulable,
                pending_vcs=vcs,
                max_walltime_by_class=self._max_walltime_by_class,
                memo=self._converted,
            )
            decisions = schedule(snapshot)
        return Plan(pending, vcs, now, gate, decisions, self._tail_of(gate, decisions, snapshot))

    def _tail_of(
        self, gate: Gate, decisions: Decisions | None, snapshot: Snapshot | None
    ) -> Tail | None:
        """The last job decided, when new jobs like it may be decided without a pass."""
        if (
            decisions is None
            or snapshot is None
            or decisions.admitted
            or decisions.preempted
            or gate.never
            or not decisions.blocked
        ):
            return None
        last = decisions.blocked[-1]
        if last.kind is not BlockKind.QUOTA or last.position != len(decisions.blocked):
            return None
        for job in reversed(snapshot.pending):
            if job.id == last.job_id:
                return Tail(job, last)
        return None  # a virtual cluster's gang

    def _full_tick(self, plan: Plan | None) -> TickReport:
        """Apply what ``plan`` decided: decided without the write lock, so that submissions
        never queue behind a pass over the whole queue, applied in one short write
        transaction as compare-and-sets from the states read (what changed meanwhile is
        skipped, and the next pass sees it).  Only rows whose reason changed are written."""
        if plan is None:
            return TickReport(0, 0)
        pending, vcs, now, gate, decisions = (
            plan.pending,
            plan.vcs,
            plan.now,
            plan.gate,
            plan.decisions,
        )
        reasons: dict[int, _Reason] = {
            job.id: (gate.held[job.id], None, None) for job in pending if job.id in gate.held
        }
        vc_by_id = {vc_job_id(vc.id): vc for vc in vcs}
        if decisions is not None:
            _blocked_reasons(decisions, vc_by_id, reasons)
        changed = _changed_reasons(pending, reasons)
        with transaction(self._sessions) as session:
            if self._guard is not None:
                limit_idle(session)
            # Never wait behind another transaction's row lock (a stopped instance's open
            # cancel holds a job's row until the server ends it): lock the rows this pass
            # writes, skipping held ones, and write only those.  The compare-and-sets
            # below still check each state; a skipped decision is taken again next pass.
            wanted = _jobs_written(gate, decisions, changed)
            locked = lock_unheld(session, JobRow, wanted)
            locked_vcs = lock_unheld(session, VirtualClusterRow, {vc.id for vc in vcs})
            skipped = len(wanted - locked) + len(vcs) - len(locked_vcs)
            if skipped:
                log.info("%d row(s) held by another transaction: left for the next pass", skipped)
            for job in pending:
                if job.id in gate.never and job.id in locked:
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
                report = self._apply(
                    session, gate.schedulable, decisions, now, vc_by_id, locked, locked_vcs
                )
            written = _write_reasons(session, {i: r for i, r in changed.items() if i in locked})
            if self._guard is not None:
                # Last, just before the commit: the epoch is checked and held for as short a
                # time as can be, so a takeover rarely waits for us; if it moved, nothing of
                # this pass is written.
                self._guard(session)
        self._pending.remember_reasons(written)
        return TickReport(report.admitted, report.waiting, report.preempted, skipped)

    def _apply(
        self,
        session: Session,
        pending: list[JobRow],
        decisions: Decisions,
        now: dt.datetime,
        vc_by_id: Mapping[str, VirtualClusterRow],
        locked: set[int],
        locked_vcs: set[int],
    ) -> TickReport:
        """Record ``decisions`` about rows read in another session (merged here unloaded),
        on the rows this transaction locked (``locked``, ``locked_vcs``) only."""
        by_id = {str(job.id): job for job in pending}
        admitted = 0
        for admission in decisions.admitted:
            if admission.job_id in vc_by_id:
                if vc_by_id[admission.job_id].id in locked_vcs:
                    vc = session.merge(vc_by_id[admission.job_id], load=False)
                    admitted += _admit_vc(session, vc, admission, now)
                continue
            if int(admission.job_id) not in locked:
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
            if blocked.job_id in vc_by_id and vc_by_id[blocked.job_id].id in locked_vcs:
                _set_vc_reason(session.merge(vc_by_id[blocked.job_id], load=False), blocked)
        preempted = sum(
            self._preempt(session, p, now)
            for p in decisions.preempted
            if vc_row_id(p.job_id) is None and int(p.job_id) in locked
        )
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
        # The claim that nominates the preemptor (``nominated_ids``): the room is its own
        # until it starts, whether the victim was running or only admitted.
        claim: dict[str, Any] = {
            "preempted_for": None if vc_id is not None else int(preemption.preemptor_id),
            "preempted_for_vc": vc_id,
            "preempted_by": preempted_by,
        }
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
                **claim,
            )
        if state not in (JobState.STARTING, JobState.RUNNING):
            return False
        return switch_job_state(
            session, victim, JobState.PREEMPTING, reason=preemption.reason, now=now, **claim
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


def _blocked_reasons(
    decisions: Decisions,
    vc_by_id: Mapping[str, VirtualClusterRow],
    reasons: dict[int, _Reason],
) -> None:
    """Add why each blocked job waits to ``reasons`` (clusters' reasons go on their rows)."""
    for blocked in decisions.blocked:
        if blocked.job_id in vc_by_id:
            continue
        expected = (
            None
            if blocked.expected_start is None
            else dt.datetime.fromtimestamp(blocked.expected_start, dt.UTC)
        )
        reasons[int(blocked.job_id)] = (blocked.reason, blocked.position, expected)


def _changed_reasons(pending: list[JobRow], reasons: dict[int, _Reason]) -> dict[int, _Reason]:
    """The reasons that differ from what the job's row says (only those are written)."""
    return {
        job.id: r
        for job in pending
        if (r := reasons.get(job.id)) is not None
        and (job.reason, job.queue_position, job.expected_start_at) != r
    }


def _jobs_written(
    gate: Gate, decisions: Decisions | None, changed: Mapping[int, _Reason]
) -> set[int]:
    """The ids of the job rows a pass writes: cancelled, admitted, preempted, reasons."""
    ids = set(gate.never) | set(changed)
    if decisions is not None:
        for job_id in [a.job_id for a in decisions.admitted] + [
            p.job_id for p in decisions.preempted
        ]:
            if vc_row_id(job_id) is None:
                ids.add(int(job_id))
    return ids


def _write_reasons(session: Session, written: dict[int, _Reason]) -> dict[int, _Reason]:
    """Pending reasons change often; they are state, not events.  Only changed rows are
    written (``written``), and only while the job is still pending; returns those."""
    changed = [
        {"_id": job_id, "_reason": r[0], "_position": r[1], "_expected": r[2]}
        for job_id, r in written.items()
    ]
    if not changed:
        return {}
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
    return written
