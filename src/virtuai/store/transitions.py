"""The one way a job's (or a virtual cluster's) state changes: checked against its table,
guarded, recorded as an event."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from virtuai.domain.vcluster import VcState, check_vc_transition
from virtuai.domain.workload import JobState, check_transition
from virtuai.store.models import JobEventRow, JobRow, VcEventRow, VirtualClusterRow


def switch_job_state(
    session: Session,
    job: JobRow,
    new_state: JobState,
    *,
    reason: str,
    now: dt.datetime,
    actor: str = "system",
    **changes: Any,
) -> bool:
    """Move ``job`` to ``new_state`` if it is still in the state we read it in.

    The update is a compare-and-set on the state column, so two writers (a
    user's cancel and the scheduler's admission, or two replicas) can never
    both apply a transition from the same state: the loser gets ``False`` and
    must re-read.  ``changes`` are extra columns set in the same update.
    """
    current = JobState(job.state)
    check_transition(current, new_state)
    values: dict[str, Any] = {"state": new_state.value, "reason": reason, "updated_at": now}
    values.update(changes)
    if not _compare_and_set(session, JobRow, job, current.value, values):
        return False
    session.add(
        JobEventRow(
            job_id=job.id,
            at=now,
            from_state=current.value,
            to_state=new_state.value,
            reason=reason,
            actor=actor,
        )
    )
    return True


def requeue_next_attempt(
    session: Session, job: JobRow, *, reason: str, now: dt.datetime, **changes: Any
) -> bool:
    """``job`` waits in the queue again as its next attempt (same id), its placement freed:
    after a preemption, a lost node or a node that lost the database."""
    return switch_job_state(
        session,
        job,
        JobState.PENDING,
        reason=reason,
        now=now,
        attempt=job.attempt + 1,
        restart_count=job.restart_count + 1,
        placement=[],
        master_port=None,
        admitted_at=None,
        started_at=None,
        queue_position=None,
        **changes,
    )


def request_cancel(
    session: Session,
    job: JobRow,
    *,
    now: dt.datetime,
    actor: str = "system",
    why: str | None = None,
) -> bool:
    """Cancel ``job``: a pending one ends at once, one holding resources is marked for the
    life-cycle loop to stop (SIGTERM, then SIGKILL after the grace).  Returns whether the
    job still has to end.  ``why`` is said when the platform cancels, not a user."""
    if JobState(job.state) is JobState.PENDING and switch_job_state(
        session,
        job,
        JobState.CANCELLED,
        reason="cancelled by request" if why is None else f"cancelled: {why}",
        now=now,
        actor=actor,
        finished_at=now,
        queue_position=None,
    ):
        return False
    if job.cancel_requested_at is None:
        job.cancel_requested_at = now
        session.add(
            JobEventRow(
                job_id=job.id,
                at=now,
                from_state=job.state,
                to_state=job.state,
                reason="cancel requested" if why is None else f"cancel requested: {why}",
                actor=actor,
            )
        )
    return True


def record_creation(session: Session, job: JobRow, *, now: dt.datetime, actor: str) -> None:
    session.add(
        JobEventRow(
            job_id=job.id,
            at=now,
            from_state=None,
            to_state=job.state,
            reason="submitted",
            actor=actor,
        )
    )


def switch_vc_state(
    session: Session,
    vc: VirtualClusterRow,
    new_state: VcState,
    *,
    reason: str,
    now: dt.datetime,
    actor: str = "system",
    **changes: Any,
) -> bool:
    """Move a virtual cluster to ``new_state`` if it is still in the state we read it in.

    The same compare-and-set as ``switch_job_state``: a user's delete and the
    loop's "it is running now" racing on one cluster cannot both win.
    """
    current = VcState(vc.state)
    check_vc_transition(current, new_state)
    values: dict[str, Any] = {"state": new_state.value, "reason": reason, "updated_at": now}
    values.update(changes)
    if not _compare_and_set(session, VirtualClusterRow, vc, current.value, values):
        return False
    record_vc_event(session, vc, current.value, new_state.value, reason, now=now, actor=actor)
    return True


def update_vc_if_state(
    session: Session,
    vc: VirtualClusterRow,
    *,
    reason: str | None = None,
    now: dt.datetime,
    event: bool = True,
    **changes: Any,
) -> bool:
    """Change a cluster's columns (not its state) if its state is still the one we read.

    For what happens within a state: admission, reconcile reports.  With
    ``event`` the change is recorded as an event from the state to itself.
    """
    current = VcState(vc.state)
    values: dict[str, Any] = {"updated_at": now, **changes}
    if reason is not None:
        values["reason"] = reason
    if not _compare_and_set(session, VirtualClusterRow, vc, current.value, values):
        return False
    if event and reason is not None:
        record_vc_event(session, vc, current.value, current.value, reason, now=now)
    return True


def _compare_and_set(
    session: Session,
    model: type[JobRow] | type[VirtualClusterRow],
    row: JobRow | VirtualClusterRow,
    state: str,
    values: dict[str, Any],
) -> bool:
    """``UPDATE ... WHERE id = row.id AND state = state``; False (and ``row`` re-read) when
    another writer changed the state first."""
    result = session.execute(
        update(model)
        .where(model.id == row.id, model.state == state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(row)
        return False
    # Reflect the update in the loaded row without making it dirty again.
    for key, value in values.items():
        set_committed_value(row, key, value)
    return True


def record_vc_event(
    session: Session,
    vc: VirtualClusterRow,
    from_state: str | None,
    to_state: str,
    reason: str,
    *,
    now: dt.datetime,
    actor: str = "system",
) -> None:
    session.add(
        VcEventRow(
            vc_id=vc.id,
            at=now,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            actor=actor,
        )
    )


LOCK_CHUNK = 10_000


def lock_unheld(
    session: Session, model: type[JobRow] | type[VirtualClusterRow], ids: set[int]
) -> set[int]:
    """Lock those of the rows ``ids`` that no other transaction holds; return their ids.

    For a writer that must never wait behind another's row lock (the scheduling pass: a
    stopped instance's open transaction, e.g. a cancel, holds a job's row until the server
    ends it, 10 s for the API's connections; #7).  It writes only the rows returned; the
    others are left for its next run.  ``FOR NO KEY UPDATE``, the lock its UPDATEs take
    anyway, so foreign-key checks of children (``FOR KEY SHARE``) do not make it skip.
    SQLite: every writer holds the database's write lock, so no row is held by another.
    """
    if not ids or session.get_bind().dialect.name != "postgresql":
        return set(ids)
    locked: set[int] = set()
    ordered = sorted(ids)
    # In chunks: a first pass over a long queue writes every job's reason, and a statement
    # takes at most 65535 parameters.
    for start in range(0, len(ordered), LOCK_CHUNK):
        query = (
            select(model.id)
            .where(model.id.in_(ordered[start : start + LOCK_CHUNK]))
            .with_for_update(skip_locked=True, key_share=True)
        )
        locked.update(session.scalars(query))
    return locked
