"""The newcomer shortcut: new jobs that would wait for quota behind the last one skip the pass.

``SchedulingLoop._newcomers_plan`` decides them without the pass over the whole
queue; what it writes (reason, queue position, expected start) must be exactly
what a pass made afresh would write, and every other change (quota freed, a job
cancelled or ended, a node or quota changed, a newcomer that goes elsewhere in
the queue) must still take the full pass.  On a real SQLite database.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.scheduling import SchedulingLoop
from virtuai.domain.clock import ManualClock
from virtuai.domain.workload import JobState
from virtuai.scheduler.snapshot import Policy
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.fingerprint import FULL_PASS_EVERY_S
from virtuai.store.migrate import migrate
from virtuai.store.models import JobRow, NodeRow, TenantQuotaRow, TenantRow, UserRow

GI = 2**30
POLICY = Policy(fair_share=True, backfill=True, preemption=True)  # the server's default
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tenants with 1 CPU of quota each, each holding it with a running job; one node."""
    path = tmp_path_factory.mktemp("newcomers") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    with transaction(make_session_factory(engine)) as session:
        session.add(
            NodeRow(
                name="n1", site="local", pool="default", cpu_milli=4000, memory=8 * GI,
                updated_at=START,
            )
        )  # fmt: skip
        for name in ("physics", "biology"):
            tenant = TenantRow(name=name, weight=1.0, created_at=START)
            user = UserRow(name=f"u-{name}", created_at=START)
            session.add_all([tenant, user])
            session.flush()
            session.add(TenantQuotaRow(tenant_id=tenant.id, pool="*", nominal_cpu_milli=1000))
            session.add(
                job(tenant.id, user.id, state=JobState.RUNNING, started_at=START,
                    admitted_at=START,
                    placement=[{"index": 0, "node": "n1", "cpu_milli": 1000, "memory": GI,
                                "gpu": 0, "gpu_indices": []}])
            )  # fmt: skip
    engine.dispose()
    return path


def job(tenant_id: int, user_id: int, **values: Any) -> JobRow:
    fields: dict[str, Any] = {
        "tenant_id": tenant_id, "user_id": user_id, "name": "sweep",
        "state": JobState.PENDING, "command": ["true"], "cpu_milli": 1000, "memory": GI,
        "walltime_s": 600, "priority_class": "normal", "priority": 0,
        "submitted_at": START, "updated_at": START,
    }  # fmt: skip
    return JobRow(**{**fields, **values})


@pytest.fixture
def factory(template: Path, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "db.db"
    shutil.copy(template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    yield make_session_factory(engine)
    engine.dispose()


def submit(factory: sessionmaker[Session], tenant: int = 0, **values: Any) -> int:
    with transaction(factory) as session:
        tenant_row = session.scalars(select(TenantRow).order_by(TenantRow.id)).all()[tenant]
        user_row = session.scalars(select(UserRow).order_by(UserRow.id)).all()[tenant]
        row = job(tenant_row.id, user_row.id, **values)
        session.add(row)
        session.flush()
        return row.id


class Counted:
    """A loop whose full passes (``_decide``) are counted."""

    def __init__(self, factory: sessionmaker[Session], clock: ManualClock) -> None:
        self.loop = SchedulingLoop(factory, clock, POLICY)
        self.passes = 0
        decide = self.loop._decide

        def counted(session: Session) -> Any:
            self.passes += 1
            return decide(session)

        self.loop._decide = counted  # type: ignore[method-assign]

    def settle(self) -> None:
        """Tick until a tick changes nothing (its own decisions read back)."""
        for _ in range(8):
            before = (self.passes, self.loop.shortcuts)
            self.loop.tick()
            if (self.passes, self.loop.shortcuts) == before:
                return
        raise AssertionError("the loop did not settle")


def written(factory: sessionmaker[Session]) -> dict[int, tuple[str, int | None, Any]]:
    with factory() as session:
        rows = session.execute(
            select(JobRow.id, JobRow.reason, JobRow.queue_position, JobRow.expected_start_at)
            .where(JobRow.state == JobState.PENDING)
            .where(JobRow.cancel_requested_at.is_(None))
        ).all()
    return {i: (reason, position, _utc(expected)) for i, reason, position, expected in rows}


def afresh(factory: sessionmaker[Session], clock: ManualClock) -> dict[int, tuple[Any, ...]]:
    """What a loop made afresh decides now, as the loop writes it."""
    plan = SchedulingLoop(factory, clock, POLICY).plan()
    if plan is None:
        return {}
    out: dict[int, tuple[Any, ...]] = {i: (r, None, None) for i, r in plan.gate.held.items()}
    if plan.decisions is None:
        return out
    assert not plan.decisions.admitted  # a settled queue: the loop admitted what fits
    for b in plan.decisions.blocked:
        expected = (
            None
            if b.expected_start is None
            else dt.datetime.fromtimestamp(b.expected_start, dt.UTC)
        )
        out[int(b.job_id)] = (b.reason, b.position, expected)
    return out


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def test_new_jobs_waiting_for_quota_skip_the_pass_and_are_told_their_place(
    factory: sessionmaker[Session],
) -> None:
    clock = ManualClock(START)
    counted = Counted(factory, clock)
    for _ in range(5):
        submit(factory)
    counted.settle()
    passes, before = counted.passes, written(factory)
    new = [submit(factory), submit(factory)]
    report = counted.loop.tick()
    assert (counted.passes, counted.loop.shortcuts) == (passes, 1)
    assert report.waiting == 7
    now = written(factory)
    assert {i: now[i] for i in before} == before  # the others keep theirs
    assert [now[i][1] for i in new] == [6, 7]
    assert now[new[0]][0] == before[max(before)][0] != "waiting for the scheduler"
    assert now == afresh(factory, clock)
    counted.settle()  # its own writes read back: no pass
    assert counted.passes == passes


def _free_quota(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        holder = session.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING)).first()
        assert holder is not None
        holder.state, holder.finished_at = JobState.SUCCEEDED, START


def _cancel_one(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        first = session.scalars(select(JobRow).where(JobRow.state == JobState.PENDING)).first()
        assert first is not None
        first.cancel_requested_at = START


def _add_node(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        session.add(
            NodeRow(name="n2", site="local", pool="default", cpu_milli=4000, memory=8 * GI,
                    updated_at=START)
        )  # fmt: skip


def _raise_quota(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        quota = session.scalars(select(TenantQuotaRow).order_by(TenantQuotaRow.tenant_id)).first()
        assert quota is not None
        quota.nominal_cpu_milli = 2000


@pytest.mark.parametrize(
    ("event", "newcomer"),
    [
        (_free_quota, {}),  # the holder ended: the first waiting job is admitted
        (_cancel_one, {}),  # a waiting job leaves: every place behind it moves up
        (_add_node, {}),
        (_raise_quota, {}),
        (None, {"priority": 5}),  # goes first: every place moves down
        (None, {"memory": 2 * GI}),  # another shape
        (None, {"walltime_s": 60}),  # another limit (backfill may treat it otherwise)
        (None, {"dependencies": [{"kind": "afterok", "job_id": 1}]}),  # the gate decides
    ],
)
def test_any_other_change_takes_the_full_pass(
    factory: sessionmaker[Session], event: Any, newcomer: dict[str, Any]
) -> None:
    clock = ManualClock(START)
    counted = Counted(factory, clock)
    for _ in range(4):
        submit(factory)
    counted.settle()
    passes = counted.passes
    if event is not None:
        event(factory)
    submit(factory, **newcomer)
    counted.loop.tick()
    assert (counted.passes, counted.loop.shortcuts) == (passes + 1, 0)
    counted.settle()
    assert written(factory) == afresh(factory, clock)


def test_the_time_driven_pass_still_comes(factory: sessionmaker[Session]) -> None:
    clock = ManualClock(START)
    counted = Counted(factory, clock)
    submit(factory)
    counted.settle()
    passes = counted.passes
    clock.advance(FULL_PASS_EVERY_S + 1)
    submit(factory, submitted_at=clock.now())
    counted.loop.tick()
    assert (counted.passes, counted.loop.shortcuts) == (passes + 1, 0)


Op = tuple[str, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["like", "like", "like", "other", "cancel", "finish", "tick", "tick"]),
        st.integers(0, 3),
        st.integers(0, 20),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=ops)
def test_what_the_loop_writes_is_what_a_fresh_pass_decides(
    template: Path, tmp_path_factory: pytest.TempPathFactory, stream: list[Op]
) -> None:
    """Random submits (mostly like the last, else of two tenants, two shapes, two
    priorities), cancels, ends and ticks: once the loop has settled, shortcut or not, its
    writes are a fresh pass's decisions."""
    path = tmp_path_factory.mktemp("stream") / "db.db"
    shutil.copy(template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    factory = make_session_factory(engine)
    try:
        clock = ManualClock(START)
        counted = Counted(factory, clock)
        for kind, a, pick in [*stream, ("tick", 0, 0)]:
            if kind == "like":
                submit(factory)
                continue
            if kind == "other":
                submit(factory, a % 2, memory=GI * (1 + a // 2), priority=pick % 2)
                continue
            if kind == "tick":
                counted.settle()
                assert written(factory) == afresh(factory, clock)
                continue
            with transaction(factory) as session:
                jobs = list(session.scalars(select(JobRow).order_by(JobRow.id)))
                row = jobs[pick % len(jobs)]
                if kind == "cancel" and row.state == JobState.PENDING:
                    row.cancel_requested_at = START
                elif kind == "finish" and row.state in (JobState.ADMITTED, JobState.RUNNING):
                    row.state, row.finished_at = JobState.SUCCEEDED, START
    finally:
        engine.dispose()
