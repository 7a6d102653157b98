"""Services' replicas reachable through the server only: their ports, picked and guarded.

A replica listens on a TCP port of its machine (``$PORT``).  The node reconciler
(``control.lifecycle``) of that machine:

* picks the port (``pick``) from the range reserved for replicas
  (``services.port_min``..``port_max``, below the kernel's ephemeral range, so no
  gang's ``MASTER_PORT`` or other ``bind(0)`` ever gets one), skipping the ports of
  live replicas and any port bound right now;
* adds it to the guarded set (``host.portguard``: only the server's user may connect)
  *before* the replica is launched (``guard``);
* makes the set exactly the ports of this machine's live replicas (``sync``: tasks of
  kind ``service`` whose end is not recorded yet) when it starts and every
  ``interval_s``, so a replica's port leaves the set within a period after it ended,
  and nothing a crash left behind survives a restart.

Without root or ``nft`` nothing is guarded: one warning at start (``virtuai doctor``
says it too), ports are still picked from the range.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.services import KIND
from virtuai.domain.workload import JobState
from virtuai.errors import DriverError, VirtuaiError
from virtuai.host.portguard import PortGuard, free_port
from virtuai.store.db import read_session
from virtuai.store.models import JobRow, TaskRow

log = logging.getLogger(__name__)
_LIVE = (JobState.STARTING.value, JobState.RUNNING.value, JobState.PREEMPTING.value)


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int = 30000
    high: int = 32767


class ReplicaPorts:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        guard: PortGuard | None,
        *,
        host: str | None,
        ports: PortRange = PortRange(),
        interval_s: float = 5.0,
        problem: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.guard = guard  # None: not guarded (not root, no nft)
        self.problem = problem  # why not (said by `virtuai doctor`)
        self._host = host
        self._range = ports
        self._interval_s = interval_s
        self._mono = monotonic
        self._next_at = 0.0
        self._ready = False

    def pick(self, session: Session) -> int:
        """A free port of the range for a new replica (any machine's live replicas' excluded:
        a replica moved elsewhere by a requeue never meets its old port's stale guard)."""
        taken = set(
            session.scalars(
                select(JobRow.master_port).where(
                    JobRow.kind == KIND,
                    JobRow.state.in_(_LIVE),
                    JobRow.master_port.is_not(None),
                )
            )
        )
        candidates = [p for p in range(self._range.low, self._range.high + 1) if p not in taken]
        random.shuffle(candidates)  # a port just freed is not handed out again at once
        port = free_port(candidates)
        if port is None:
            raise DriverError(
                f"no free port for a service replica in {self._range.low}-{self._range.high}"
            )
        return port

    def guard_port(self, port: int) -> None:
        """Before a replica is launched: its port refuses everyone but the server."""
        if self.guard is None:
            return
        self._setup()
        self.guard.add(port)

    def tick(self) -> None:
        """Every ``interval_s`` (and first at start): the set is this machine's live
        replicas' ports, exactly."""
        if self.guard is None or self._mono() < self._next_at:
            return
        self._next_at = self._mono() + self._interval_s
        try:
            wanted = self.live_ports()
            if not wanted and not self._ready and not self.guard.exists():
                return  # no replica here, ever: no table made on a machine that needs none
            self._setup()
            added, removed = self.guard.sync(wanted)
        except VirtuaiError as error:
            log.warning("guarding the replicas' ports failed: %s", error.message)
            return
        if added or removed:
            log.info(
                "replica ports guarded: +%s -%s", sorted(added) or "[]", sorted(removed) or "[]"
            )

    def live_ports(self) -> set[int]:
        """The ports of this machine's replicas whose end is not recorded yet."""
        query = (
            select(JobRow.master_port)
            .join(TaskRow, TaskRow.job_id == JobRow.id)
            .where(
                JobRow.kind == KIND,
                JobRow.master_port.is_not(None),
                TaskRow.attempt == JobRow.attempt,
                TaskRow.outcome.is_(None),
            )
        )
        if self._host is not None:
            query = query.where(TaskRow.host == self._host)
        with read_session(self._sessions) as session:
            ports = {int(p) for p in session.scalars(query) if p}
            session.rollback()
        return ports

    def _setup(self) -> None:
        if not self._ready and self.guard is not None:
            self.guard.setup()
            self._ready = True
