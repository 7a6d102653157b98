"""The scheduler's idle digest changes whenever a job changes state, even one committed
late with an older timestamp than the newest already seen."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from test_store_state_columns import a_job

from virtuai.store.db import transaction
from virtuai.store.fingerprint import scheduling_fingerprint
from virtuai.store.models import JobRow


def test_a_late_transition_with_an_older_timestamp_is_seen(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        job = a_job(session)
        job_id, before = job.id, job.updated_at
        # A newer job keeps the newest ``updated_at`` where it is.
        newer = JobRow(
            tenant_id=job.tenant_id, user_id=job.user_id, name="k", state="pending",
            command=["true"], cpu_milli=1000, memory=2**30, walltime_s=60,
            priority_class="normal", priority=0, submitted_at=before,
            updated_at=before + dt.timedelta(seconds=5),
        )  # fmt: skip
        session.add(newer)
    with session_factory() as session:
        seen = scheduling_fingerprint(session)
    with transaction(session_factory) as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(state="running", updated_at=before - dt.timedelta(seconds=1))
        )
    with session_factory() as session:
        assert scheduling_fingerprint(session) != seen
