"""The one way a job's state changes: checked against the table, guarded, recorded as an event."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from virtuai.domain.workload import JobState, check_transition
from virtuai.store.models import JobEventRow, JobRow


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
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job.id, JobRow.state == current.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        return False
    # Reflect the update in the loaded row without making it dirty again.
    for key, value in values.items():
        set_committed_value(job, key, value)
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
