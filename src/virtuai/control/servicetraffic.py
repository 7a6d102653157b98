"""Requests to services counted on every server, summed for the leader's autoscaler.

Each ``virtuai up`` proxies the requests that reach it and counts them
(``proxy.services.Traffic``).  With several servers on one database the leader's
own counts are only part of the traffic, so:

* every server, every ``publish_s`` (a step of its loops, leader or not), writes
  one row per service it has seen requests of (``service_traffic``: service, its
  node's name, its rate over the window, its last request), only when it has
  something new to say: while a service has traffic, and once more when its rate
  falls to zero;
* the leader's reconciler asks ``rate`` and ``last``: its own proxy's numbers
  (fresh to the request) plus every other server's row, the rate only of rows
  written within ``fresh_s`` (a server that stopped writing stopped counting) and
  the latest request of all.  The rows are read at most once per ``publish_s / 2``.

One small upsert per server and active service every few seconds; nothing on the
request's path.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.store.db import read_session, transaction
from virtuai.store.models import ServiceTrafficRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalTraffic:
    """This server's own counts (``proxy.services.Traffic``'s methods)."""

    services: Callable[[], list[int]]
    last: Callable[[int], float | None]
    rate: Callable[[int], float]


class TrafficBoard:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        node: str,
        local: LocalTraffic,
        *,
        publish_s: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._node = node
        self._local = local
        self.publish_s = publish_s
        self.fresh_s = 3 * publish_s + 2.0
        self._mono = monotonic
        self._next_publish = 0.0
        self._said: dict[int, tuple[float, float | None]] = {}  # service -> (rate, last)
        self._read_at = float("-inf")
        self._others: dict[int, tuple[float, float | None]] = {}  # service -> (rate, last)

    # -- every server ----------------------------------------------------------------------

    def publish(self) -> None:
        if self._mono() < self._next_publish:
            return
        self._next_publish = self._mono() + self.publish_s
        news = {}
        for service_id in self._local.services():
            rate, last = self._local.rate(service_id), self._local.last(service_id)
            if rate > 0 or self._said.get(service_id) != (rate, last):
                news[service_id] = (rate, last)
        if not news:
            return
        now = self._clock.now()
        with transaction(self._sessions) as session:
            for service_id, (rate, last) in news.items():
                row = session.get(ServiceTrafficRow, (service_id, self._node))
                if row is None:
                    row = ServiceTrafficRow(service_id=service_id, node=self._node)
                    session.add(row)
                row.rate = rate
                row.last_request_at = (
                    None if last is None else dt.datetime.fromtimestamp(last, dt.UTC)
                )
                row.updated_at = now
        self._said.update(news)

    # -- the leader ------------------------------------------------------------------------

    def rate(self, service_id: int) -> float:
        """Requests per second to ``service_id`` through every server."""
        other = self._other(service_id)
        return self._local.rate(service_id) + (other[0] if other else 0.0)

    def last(self, service_id: int) -> float | None:
        """Epoch seconds of the latest request to ``service_id`` through any server."""
        stamps = [self._local.last(service_id)]
        other = self._other(service_id)
        if other is not None:
            stamps.append(other[1])
        present = [s for s in stamps if s is not None]
        return max(present) if present else None

    def forget(self, session: Session, service_id: int) -> None:
        """The rows of a deleted service (in the caller's transaction)."""
        session.execute(delete(ServiceTrafficRow).where(ServiceTrafficRow.service_id == service_id))

    def _other(self, service_id: int) -> tuple[float, float | None] | None:
        if self._mono() - self._read_at >= self.publish_s / 2:
            self._read_at = self._mono()
            self._others = self._read()
        return self._others.get(service_id)

    def _read(self) -> dict[int, tuple[float, float | None]]:
        now = self._clock.now()
        found: dict[int, tuple[float, float | None]] = {}
        with read_session(self._sessions) as session:
            rows = session.scalars(
                select(ServiceTrafficRow).where(ServiceTrafficRow.node != self._node)
            ).all()
            for row in rows:
                fresh = (now - row.updated_at).total_seconds() <= self.fresh_s
                last = None if row.last_request_at is None else row.last_request_at.timestamp()
                rate, latest = found.get(row.service_id, (0.0, None))
                found[row.service_id] = (
                    rate + (row.rate if fresh else 0.0),
                    last if latest is None or (last is not None and last > latest) else latest,
                )
            session.rollback()
        return found
