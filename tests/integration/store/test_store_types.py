"""Column types give the same Python values back on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.store.models import ApiTokenRow, JobRow, NodeRow, TaskRow, TenantRow

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
EST = dt.timezone(dt.timedelta(hours=-5))

aware_datetimes = st.builds(
    lambda naive, offset: naive.replace(tzinfo=dt.timezone(offset)),
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)).map(
        lambda d: dt.timedelta(minutes=d // dt.timedelta(minutes=1))
    ),
)


def store_and_reload(factory: sessionmaker[Session], when: dt.datetime) -> dt.datetime:
    with factory() as session, session.begin():
        session.execute(update(TenantRow).values(created_at=when))
    with factory() as session:
        return session.execute(select(TenantRow.created_at)).scalar_one()


@pytest.fixture
def factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The session factory with one tenant in the database."""
    with session_factory() as session, session.begin():
        session.add(rows.tenant())
    return session_factory


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC),
        dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=IST),
        dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=EST),  # a new year in UTC
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ],
    ids=["utc", "ist-micro", "est-year-end", "epoch"],
)
def test_utc_datetime_returns_the_same_instant_in_utc(
    factory: sessionmaker[Session], when: dt.datetime
) -> None:
    back = store_and_reload(factory, when)
    assert back == when
    assert back.tzinfo == dt.UTC
    assert back.isoformat() == when.astimezone(dt.UTC).isoformat()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(when=aware_datetimes)
def test_utc_datetime_round_trips_any_aware_datetime(
    factory: sessionmaker[Session], when: dt.datetime
) -> None:
    back = store_and_reload(factory, when)
    assert (back, back.tzinfo) == (when, dt.UTC)


def test_utc_datetime_compares_instants_not_wall_clocks(factory: sessionmaker[Session]) -> None:
    store_and_reload(factory, dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC))
    # 13:00 in India is 07:30 UTC: earlier, although its wall clock is later.
    later_wall_clock = dt.datetime(2025, 1, 1, 13, 0, tzinfo=IST)
    with factory() as session:
        count = select(TenantRow.id).where(TenantRow.created_at < later_wall_clock)
        assert session.execute(count).all() == []
        count = select(TenantRow.id).where(TenantRow.created_at > later_wall_clock)
        assert len(session.execute(count).all()) == 1


def test_utc_datetime_rejects_naive_datetimes(factory: sessionmaker[Session]) -> None:
    with factory() as session, pytest.raises(StatementError) as raised:
        session.add(rows.tenant("naive", created_at=dt.datetime(2025, 1, 1)))
        session.flush()
    assert isinstance(raised.value.orig, ValueError)
    with factory() as session, pytest.raises(StatementError):
        session.execute(select(TenantRow).where(TenantRow.created_at < dt.datetime(2025, 1, 1)))


def test_utc_datetime_keeps_null(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        owner = rows.user()
        session.add(owner)
        session.flush()
        session.add(rows.api_token(owner, last_used_at=None))
    with factory() as session:
        assert session.execute(select(ApiTokenRow.last_used_at)).scalar_one() is None


JSON_VALUES: list[Any] = [
    {"nested": {"list": [1, 2.5, True, None, "x"]}, "empty": {}, "unicode": "Zürich ☃ 東京"},
    {"big": 2**53, "negative": -1, "float": 1e-300, "quote": "a\"b'c\\\\d\n"},
]


def test_json_columns_round_trip(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session, session.begin():
        owner, team = rows.user(), rows.tenant()
        session.add_all([owner, team])
        session.flush()
        parent = rows.job(
            owner,
            team,
            command=["sh", "-c", "echo 'hi' \"there\""],
            env={"LANG": "C.UTF-8", "EMPTY": "", "UNICODE": "ünïcødé"},
            placement=[{"node": "n1", "gpus": [0, 1]}, {"node": "n2", "gpus": []}],
        )
        session.add(parent)
        session.flush()
        session.add_all(
            [rows.task(parent, i, handle=value) for i, value in enumerate(JSON_VALUES)]
            + [rows.task(parent, len(JSON_VALUES), handle=None)]
        )
        session.add(NodeRow(name="n1", site="local", pool="gpu", cpu_milli=8000, memory=2**34,
                            gpus=[{"index": 0, "model": "A100", "memory": 80 * 2**30}],
                            updated_at=rows.T0))  # fmt: skip
    with session_factory() as session:
        job = session.execute(select(JobRow)).scalar_one()
        assert job.command == ["sh", "-c", "echo 'hi' \"there\""]
        assert job.env == {"LANG": "C.UTF-8", "EMPTY": "", "UNICODE": "ünïcødé"}
        assert job.placement == [{"node": "n1", "gpus": [0, 1]}, {"node": "n2", "gpus": []}]
        handles = session.execute(select(TaskRow.handle).order_by(TaskRow.index)).scalars().all()
        assert handles == [*JSON_VALUES, None]
        node = session.execute(select(NodeRow)).scalar_one()
        assert node.gpus == [{"index": 0, "model": "A100", "memory": 80 * 2**30}]
        assert (node.schedulable, job.gpu, job.tasks, job.attempt) == (True, 0, 1, 0)


def test_json_none_is_sql_null(session_factory: sessionmaker[Session]) -> None:
    """A task with no handle yet is found with IS NULL (not stored as JSON 'null')."""
    with session_factory() as session, session.begin():
        owner, team = rows.user(), rows.tenant()
        session.add_all([owner, team])
        session.flush()
        parent = rows.job(owner, team)
        session.add(parent)
        session.flush()
        session.add_all([rows.task(parent, 0, handle=None), rows.task(parent, 1)])
        session.add(rows.task(parent, 2, handle={"pid": 42}))
    with session_factory() as session:
        without = select(TaskRow.index).where(TaskRow.handle.is_(None)).order_by(TaskRow.index)
        assert session.execute(without).scalars().all() == [0, 1]
