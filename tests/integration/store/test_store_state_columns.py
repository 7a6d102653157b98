"""State columns hold the state machines' enums: a state the machine lacks never reaches
the database, and what is read back is the enum."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.workload import JobState
from virtuai.store.db import transaction
from virtuai.store.models import JobRow, TenantRow, UserRow


def a_job(session: Session) -> JobRow:
    now = dt.datetime.now(dt.UTC)
    tenant = TenantRow(name="physics", weight=1.0, created_at=now)
    user = UserRow(name="alice", created_at=now)
    session.add_all([tenant, user])
    session.flush()
    job = JobRow(
        tenant_id=tenant.id,
        user_id=user.id,
        name="j",
        state=JobState.PENDING,
        command=["true"],
        cpu_milli=1000,
        memory=2**30,
        walltime_s=60,
        priority_class="normal",
        priority=0,
        submitted_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    return job


def test_a_state_is_read_back_as_the_enum(session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as session:
        job_id = a_job(session).id
        # A plain string equal to a member's value is accepted (StrEnum members are strings).
        session.execute(update(JobRow).where(JobRow.id == job_id).values(state="running"))
    with session_factory() as session:
        state = session.scalar(select(JobRow.state).where(JobRow.id == job_id))
    assert state is JobState.RUNNING


def test_a_state_the_machine_lacks_is_refused_before_the_database(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        job_id = a_job(session).id
    with (
        pytest.raises(StatementError, match="'runing' is not a JobState"),
        transaction(session_factory) as session,
    ):
        session.execute(update(JobRow).where(JobRow.id == job_id).values(state="runing"))
    with session_factory() as session:
        assert session.scalar(select(JobRow.state).where(JobRow.id == job_id)) is JobState.PENDING
