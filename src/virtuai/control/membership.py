"""This instance in the cluster: its node's heartbeat, and the scheduling lease.

Every instance runs one ``Membership`` thread.  Each round it

1. bumps its node's heartbeat counter (the leader declares a node lost when the
   counter stands still for ``node_lost_s``, by the leader's own clock);
2. renews the lease if it leads, or watches it and takes it over when the
   holder's renewals have stood still for ``lease_ttl_s`` (by *its* clock), or
   at once when the holder is a previous incarnation of its own node;
3. when it has not reached the database for ``self_fence_s``, calls
   ``on_isolated`` once: the node reconciler kills its tasks, since the leader
   will soon give their jobs to other nodes.

``epoch()`` is the fencing epoch while this instance leads and its last renewal
is younger than the lease's time, else ``None``: a leader that cannot renew
stops acting before anyone may take over.  ``guard(session)`` is what every
leader transaction calls first (``store.lease.check_epoch``).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.store.db import transaction
from virtuai.store.lease import (
    LeaseView,
    NotLeader,
    check_epoch,
    ensure_lease,
    heartbeat,
    read_lease,
    release_lease,
    renew_lease,
    take_lease,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    node: str
    interval_s: float = 0.25  # heartbeat and lease round
    lease_ttl_s: float = 1.0
    self_fence_s: float = 5.0


def instance_id(node: str) -> str:
    """Who holds the lease: the node, this process and a random part (pids are reused)."""
    return f"{node}/{os.getpid()}/{secrets.token_hex(4)}"


class Membership:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: MembershipConfig,
        *,
        on_lead: Callable[[], None] | None = None,
        on_isolated: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.config = config
        self.holder = instance_id(config.node)
        self._on_lead = on_lead
        self._on_isolated = on_isolated
        self._mono = monotonic
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._renewed = 0.0
        self._seen: tuple[LeaseView, float] | None = None
        self._reached = self._mono()  # the database, last time
        self._isolated = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtuai-membership", daemon=True)
        # Apart from the heartbeat thread: a call to an unreachable database blocks for
        # seconds (TCP timeouts), and the fence must not wait for it.
        self._watchdog = threading.Thread(target=self._watch, name="virtuai-fence", daemon=True)
        self._fence_lock = threading.Lock()

    # -- what the loops ask ----------------------------------------------------------------

    def epoch(self) -> int | None:
        with self._lock:
            if self._epoch is None or self._mono() - self._renewed >= self.config.lease_ttl_s:
                return None
            return self._epoch

    @property
    def is_leader(self) -> bool:
        return self.epoch() is not None

    def guard(self, session: Session) -> None:
        """First statement of every leader transaction: refuse unless we still lead."""
        epoch = self.epoch()
        if epoch is None:
            raise NotLeader("this instance does not hold the scheduling lease")
        check_epoch(session, epoch)

    def seconds_since_database(self) -> float:
        return self._mono() - self._reached

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        self.step()  # lead at once when nobody else does (one machine, a restart)
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        epoch = self.epoch()
        if epoch is not None:
            try:
                with transaction(self._sessions) as session:
                    release_lease(session, holder=self.holder, epoch=epoch)
            except Exception:  # the lease then simply expires
                log.warning("could not give up the scheduling lease", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            self.step()

    def _watch(self) -> None:
        while not self._stop.wait(self.config.interval_s / 2):
            self.check_isolation()

    def step(self) -> None:
        """One round: heartbeat, lease, isolation check. Never raises."""
        try:
            with transaction(self._sessions) as session:
                heartbeat(session, self.config.node, self._clock.now())
            self._reached = self._mono()
            self._isolated = False
        except Exception as error:
            log.warning("heartbeat failed: %s", _short(error))
        try:
            self._lease_step()
        except Exception as error:
            log.warning("scheduling lease: %s", _short(error))
        self.check_isolation()

    def check_isolation(self) -> None:
        """Without the database for ``self_fence_s``: kill this node's tasks, once."""
        with self._fence_lock:
            if (
                self._isolated
                or self._on_isolated is None
                or self.seconds_since_database() < self.config.self_fence_s
            ):
                return
            self._isolated = True
        log.error(
            "no database for %.0fs: killing this node's tasks (the leader requeues them)",
            self.seconds_since_database(),
        )
        self._on_isolated()

    def _lease_step(self) -> None:
        now = self._clock.now()
        mono = self._mono()
        with self._lock:
            epoch = self._epoch
        if epoch is not None:
            with transaction(self._sessions) as session:
                kept = renew_lease(session, holder=self.holder, epoch=epoch, now=now)
            with self._lock:
                if kept:
                    self._renewed = mono
                else:
                    self._epoch = None
            if not kept:
                log.warning("lost the scheduling lease (epoch %d)", epoch)
            return
        with transaction(self._sessions) as session:
            view = read_lease(session)
        if view is None:
            with transaction(self._sessions) as session:
                ensure_lease(session, now)
            with transaction(self._sessions) as session:
                view = read_lease(session)
        if view is None:
            return
        if self._seen is None or (self._seen[0].epoch, self._seen[0].renew_seq) != (
            view.epoch,
            view.renew_seq,
        ):
            self._seen = (view, mono)
        vacant = view.holder == "" or (
            view.holder_node == self.config.node and view.holder != self.holder
        )
        if not vacant and mono - self._seen[1] < self.config.lease_ttl_s:
            return
        with transaction(self._sessions) as session:
            node = self.config.node
            taken = take_lease(session, holder=self.holder, node=node, seen=view, now=now)
        if taken is None:
            return
        with self._lock:
            self._epoch, self._renewed = taken, mono
        log.info("leading the cluster (epoch %d; previous holder %s)", taken, view.holder or "none")
        if self._on_lead is not None:
            self._on_lead()


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


__all__ = ["Membership", "MembershipConfig", "NotLeader", "instance_id"]
