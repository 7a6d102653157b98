"""Which pending jobs may be scheduled at all: dependencies met, array throttles respected,
data staged where they run.

Jobs held here never reach the scheduler's snapshot; they say why they wait.
Jobs whose dependencies can never be met are cancelled, so a broken chain
ends instead of waiting forever.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from virtuai.domain.datasets import DATA_ENV
from virtuai.domain.dependencies import DependedJob, Dependency, DependencyKind, evaluate
from virtuai.domain.workload import JobState
from virtuai.store.inventory import HOLDING_STATES
from virtuai.store.models import JobRow
from virtuai.store.transitions import switch_job_state


@dataclass
class Gate:
    schedulable: list[JobRow] = field(default_factory=list)
    held: dict[int, str] = field(default_factory=dict)  # job id -> why it waits
    # job id -> why it can never run; filled instead of cancelling with cancel_never=False
    never: dict[int, str] = field(default_factory=dict)


def gate_pending(
    session: Session, pending: Sequence[JobRow], now: dt.datetime, *, cancel_never: bool = True
) -> Gate:
    """``cancel_never=False``: only read, and list the jobs to cancel in ``Gate.never``
    (for a caller that decides without the write lock and applies later)."""
    gate = Gate()
    dependency_states = _dependency_states(session, pending)
    room = _array_room(session, pending)
    for job in sorted(pending, key=lambda j: (j.array_index or 0, j.id)):
        if job.stage and DATA_ENV not in (job.env or {}):
            # Its data is being copied where it runs (control.staging says how far).
            staging = job.reason if job.reason.startswith("staging data") else ""
            gate.held[job.id] = staging or f"waiting to stage data {job.data}"
            continue
        if job.dependencies:
            terms = [Dependency.from_json(d) for d in job.dependencies]
            blocker = (
                _singleton_blocker(session, job)
                if any(t.kind is DependencyKind.SINGLETON for t in terms)
                else None
            )
            status = evaluate(
                terms,
                dependency_states,
                now=now,
                singleton_blocker=blocker,
                own_index=job.array_index,
            )
            if status.never is not None and not cancel_never:
                gate.never[job.id] = f"dependency never satisfied: {status.never}"
                continue
            if status.never is not None:
                switch_job_state(
                    session,
                    job,
                    JobState.CANCELLED,
                    reason=f"dependency never satisfied: {status.never}",
                    now=now,
                    finished_at=now,
                    queue_position=None,
                )
                continue
            if not status.ready:
                gate.held[job.id] = f"waiting for dependency: {status.waiting_for}"
                continue
        if job.array_id is not None and job.array_max_running is not None:
            if room[job.array_id] <= 0:
                gate.held[job.id] = (
                    f"waiting for array limit: at most {job.array_max_running} elements "
                    f"of array {job.array_id} run at once"
                )
                continue
            room[job.array_id] -= 1
        gate.schedulable.append(job)
    return gate


def _dependency_states(session: Session, pending: Sequence[JobRow]) -> dict[int, list[DependedJob]]:
    """Every job depended on; an array's id stands for all its elements (each with its
    index: ``ID_IDX`` and ``aftercorr`` pick among them), an element's own id for itself."""
    wanted = {
        int(d["job_id"])
        for job in pending
        for d in job.dependencies
        if d["kind"] != DependencyKind.SINGLETON.value
    }
    states: dict[int, list[DependedJob]] = defaultdict(list)
    if not wanted:
        return states
    rows = session.execute(
        select(
            JobRow.id,
            JobRow.array_id,
            JobRow.array_index,
            JobRow.state,
            JobRow.started_at,
            JobRow.finished_at,
        ).where(or_(JobRow.id.in_(wanted), JobRow.array_id.in_(wanted)))
    )
    for job_id, array_id, index, state, started_at, finished_at in rows:
        depended = DependedJob(JobState(state), started_at, finished_at, index)
        if array_id is not None and array_id in wanted:
            states[array_id].append(depended)
        if job_id in wanted and job_id != array_id:
            states[job_id].append(depended)
    return states


def _singleton_blocker(session: Session, job: JobRow) -> int | None:
    """A job of the same name and user that holds resources, or waits ahead of ``job``
    (Slurm: running or suspended, or pending and submitted earlier)."""
    return session.scalar(
        select(func.min(JobRow.id)).where(
            JobRow.user_id == job.user_id,
            JobRow.name == job.name,
            JobRow.id != job.id,
            or_(
                JobRow.state.in_(HOLDING_STATES),
                and_(JobRow.state == JobState.PENDING.value, JobRow.id < job.id),
            ),
        )
    )


def _array_room(session: Session, pending: Sequence[JobRow]) -> dict[int, int]:
    """How many more elements of each throttled array may hold resources now."""
    limits = {
        job.array_id: job.array_max_running
        for job in pending
        if job.array_id is not None and job.array_max_running is not None
    }
    if not limits:
        return {}
    holding = dict(
        session.execute(
            select(JobRow.array_id, func.count())
            .where(JobRow.array_id.in_(list(limits)), JobRow.state.in_(HOLDING_STATES))
            .group_by(JobRow.array_id)
        ).all()
    )
    return {array_id: limit - holding.get(array_id, 0) for array_id, limit in limits.items()}
