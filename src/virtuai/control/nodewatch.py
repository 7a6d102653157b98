"""The leader's watch over machines: lost nodes, nodes back, and drains.

- A node whose heartbeat counter stands still for ``node_lost_s`` (by the
  leader's clock) is lost (a Slurm site's nodes excepted: they send none):
  ``lost_at`` is set (users see ``unreachable``) and every job holding
  resources on it is requeued as its next attempt, or fails with
  ``--no-requeue``, with the reason "node NAME lost".  Its tasks there get the
  outcome ``lost``.  Tasks of the old attempt on other nodes are then
  killed by their own nodes' reconcilers (they belong to no current attempt).
- When the counter moves again the node is back: ``lost_at`` is cleared.  Its
  reconciler kills the tasks of attempts moved elsewhere before anything else.
- A ``draining`` node takes no new work (the snapshot leaves it out); with
  ``drain --requeue`` its running jobs are preempted (checkpoint signal, grace)
  and requeued, else they are waited for.

Every write runs in a transaction guarded by the lease's epoch.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.domain.cluster import NodeState
from virtuai.domain.sites import LOCAL_SITE
from virtuai.domain.workload import JobState, TaskOutcome
from virtuai.store.db import transaction
from virtuai.store.inventory import placement_from_json
from virtuai.store.lease import limit_idle
from virtuai.store.models import JobRow, NodeRow, TaskRow
from virtuai.store.transitions import requeue_next_attempt, switch_job_state

log = logging.getLogger(__name__)

# A job holding resources on a node, whose tasks may run there.
_ON_NODE = [
    JobState.ADMITTED.value,
    JobState.STARTING.value,
    JobState.RUNNING.value,
    JobState.PREEMPTING.value,
]


@dataclass(frozen=True, slots=True)
class NodeWatchConfig:
    node_lost_s: float = 10.0


class NodeWatch:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: NodeWatchConfig,
        guard: Callable[[Session], None],
        monotonic: Callable[[], float] = time.monotonic,
        own_node: str | None = None,
    ) -> None:
        # The leader's own machine is alive: it is running this.  (On one machine with
        # SQLite, a heartbeat held up by the write lock must not make it "lost".)
        self._own_node = own_node
        self._sessions = sessions
        self._clock = clock
        self._config = config
        self._guard = guard
        self._mono = monotonic
        # node -> (heartbeat counter, when we saw it change): liveness by our own clock.
        self._seen: dict[str, tuple[int, float]] = {}

    def tick(self) -> None:
        with transaction(self._sessions) as session:
            limit_idle(session)
            self._watch(session)
            self._guard(session)  # last, just before the commit (see SchedulingLoop.tick)

    def _watch(self, session: Session) -> None:
        now = self._clock.now()
        mono = self._mono()
        for node in session.scalars(select(NodeRow).order_by(NodeRow.name)):
            if node.site != LOCAL_SITE:
                # A site's nodes send no heartbeat: their health is what the site loop reads
                # from sinfo (down nodes unschedulable; an unreachable site keeps its jobs'
                # last state).  A lost mark from before this rule is taken back.
                if node.lost_at is not None:
                    node.lost_at = None
                elif node.state == NodeState.DRAINING.value and node.drain_requeue:
                    preempt_jobs_on(session, node.name, f"node {node.name} is draining", now)
                continue
            seen = self._seen.get(node.name)
            moved = seen is None or seen[0] != node.heartbeat_seq or node.name == self._own_node
            if moved:
                self._seen[node.name] = (node.heartbeat_seq, mono)
            if node.lost_at is not None:
                if moved and seen is not None:
                    node.lost_at = None
                    log.warning("node %s is back", node.name)
                continue
            if not moved and seen is not None and mono - seen[1] >= self._config.node_lost_s:
                node.lost_at = now
                log.error("node %s lost: no heartbeat for %.0fs", node.name, mono - seen[1])
                requeue_jobs_on(session, node.name, f"node {node.name} lost", now)
            elif node.state == NodeState.DRAINING.value and node.drain_requeue:
                preempt_jobs_on(session, node.name, f"node {node.name} is draining", now)


def jobs_on(session: Session, node: str) -> list[JobRow]:
    """Platform jobs (not inside a virtual cluster) with a task placed on ``node``."""
    jobs = session.scalars(select(JobRow).where(JobRow.state.in_(_ON_NODE), JobRow.vc_id.is_(None)))
    return [j for j in jobs if any(p.node == node for p in placement_from_json(j.placement))]


def requeue_jobs_on(session: Session, node: str, why: str, now: dt.datetime) -> int:
    """Every job on the lost ``node`` goes back to the queue as its next attempt (or fails)."""
    count = 0
    for job in jobs_on(session, node):
        session.execute(
            update(TaskRow)
            .where(
                TaskRow.job_id == job.id,
                TaskRow.attempt == job.attempt,
                TaskRow.host == node,
                TaskRow.outcome.is_(None),
            )
            .values(outcome=TaskOutcome.LOST.value, message=why, finished_at=now)
            .execution_options(synchronize_session=False)
        )
        if JobState(job.state) is JobState.ADMITTED:
            done = switch_job_state(
                session,
                job,
                JobState.PENDING,
                reason=f"requeued: {why}",
                now=now,
                placement=[],
                admitted_at=None,
                master_port=None,
            )
        elif job.requeue:
            done = requeue_next_attempt(session, job, reason=f"requeued: {why}", now=now)
        else:
            done = switch_job_state(
                session, job, JobState.FAILED, reason=why, now=now, finished_at=now
            )
        count += done
    return count


def preempt_jobs_on(session: Session, node: str, why: str, now: dt.datetime) -> int:
    """Running jobs on a draining node get their checkpoint signal and are requeued."""
    count = 0
    for job in jobs_on(session, node):
        state = JobState(job.state)
        if state is JobState.ADMITTED:
            count += switch_job_state(
                session,
                job,
                JobState.PENDING,
                reason=f"requeued: {why}",
                now=now,
                placement=[],
                admitted_at=None,
                master_port=None,
            )
        elif state in (JobState.STARTING, JobState.RUNNING):
            count += switch_job_state(session, job, JobState.PREEMPTING, reason=why, now=now)
    return count
