"""Requests to services counted on several servers, summed for the leader, over a real
database (SQLite and PostgreSQL): two boards of two servers on one database, each with
its own local counts, the leader's sum, stale rows, and rows of a deleted service."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.servicetraffic import LocalTraffic, TrafficBoard
from virtuai.domain.clock import ManualClock
from virtuai.store.db import transaction
from virtuai.store.models import ServiceTrafficRow

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


class Counts:
    """A proxy's counts as ``proxy.services.Traffic`` gives them."""

    def __init__(self) -> None:
        self.rates: dict[int, float] = {}
        self.lasts: dict[int, float] = {}

    def local(self) -> LocalTraffic:
        return LocalTraffic(
            lambda: list(self.lasts),
            self.lasts.get,
            lambda service: self.rates.get(service, 0.0),
        )


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ServiceTrafficRow)) or 0)


def test_the_leader_counts_every_servers_requests(
    session_factory: sessionmaker[Session],
) -> None:
    clock, mono = ManualClock(T0), Mono()
    leader_counts, other_counts = Counts(), Counts()
    leader = TrafficBoard(session_factory, clock, "n1", leader_counts.local(), monotonic=mono)
    other = TrafficBoard(session_factory, clock, "n2", other_counts.local(), monotonic=mono)
    now = T0.timestamp()

    # Only the other server was asked: the leader sees its rate and last request.
    other_counts.rates[7], other_counts.lasts[7] = 4.0, now - 1
    other.publish()
    assert leader.rate(7) == 4.0
    assert leader.last(7) == now - 1
    assert leader.rate(8) == 0.0 and leader.last(8) is None

    # Both: the rates add up, the latest request wins.
    leader_counts.rates[7], leader_counts.lasts[7] = 1.5, now - 5
    assert leader.rate(7) == 4.0 + 1.5  # read again only after half a period...
    other_counts.rates[7], other_counts.lasts[7] = 2.0, now
    mono.t += 2.0
    other.publish()
    mono.t += 1.0
    assert leader.rate(7) == 2.0 + 1.5  # ...which has passed
    assert leader.last(7) == now

    # A server that stopped writing stopped counting: its rate is dropped, its last kept.
    clock.advance(60)
    mono.t += 60
    assert leader.rate(7) == 1.5
    assert leader.last(7) == now

    # Idle: one last row at rate 0, then nothing more is written.
    other_counts.rates[7] = 0.0
    other.publish()
    with session_factory() as session:
        row = session.get(ServiceTrafficRow, (7, "n2"))
        assert row is not None and row.rate == 0.0
        written = row.updated_at
    mono.t += 10
    clock.advance(10)
    other.publish()
    with session_factory() as session:
        row = session.get(ServiceTrafficRow, (7, "n2"))
        assert row is not None and row.updated_at == written

    # A deleted service's rows go with it.
    leader.publish()
    assert _rows(session_factory) == 2
    with transaction(session_factory) as session:
        leader.forget(session, 7)
    assert _rows(session_factory) == 0
