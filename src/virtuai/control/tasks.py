"""The node reconciler's work on tasks: stop, observe, reap, fence, release.

``LifecycleLoop`` (``control.lifecycle``) is this plus starting, launching and
finishing jobs.  Every driver call runs with a deadline (``Deadline``) and
per-item backoff (``Backoff``): one task whose driver call raises or hangs is
retried, then recorded as lost with the reason, while the others go on.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from virtuai.control.isolation import Backoff, Deadline
from virtuai.domain.clock import Clock
from virtuai.domain.workload import FINISHED_STATES, JobState, TaskOutcome
from virtuai.drivers.base import Driver, Handle, StopReason, TaskResult
from virtuai.store.db import read_session
from virtuai.store.lease import loop_transaction
from virtuai.store.models import JobRow, TaskRow

log = logging.getLogger(__name__)

ACTIVE_STATES = [JobState.STARTING.value, JobState.RUNNING.value, JobState.PREEMPTING.value]
_FINISHED = [s.value for s in FINISHED_STATES]


class TaskReconciler:
    """Base of ``LifecycleLoop``: what it does to the tasks of its node (``host``)."""

    _sessions: sessionmaker[Session]
    _drivers: Mapping[str, Driver]
    _clock: Clock
    _backoff: Backoff
    _deadline: Deadline
    _wake: Callable[[], None]
    _known: dict[int, tuple[str, Handle]]
    _known_lock: threading.Lock
    _unmarked: set[int]  # released here, the mark not committed yet (``LifecycleLoop``)
    # Nodes no machine of ours hosts (a Slurm site's): their tasks are driven through the
    # site's driver by the instance that leads, which this callable says.
    _remote_nodes: Callable[[], frozenset[str]]
    host: str | None

    def _mine(self, host: str | None) -> bool:
        return self.host is None or host == self.host or host in self._remote_nodes()

    def _my_tasks(self) -> Any:
        """The filter on ``TaskRow`` of the tasks this reconciler acts on."""
        if self.host is None:
            return TaskRow.id.is_not(None)
        remote = self._remote_nodes()
        if remote:
            return or_(TaskRow.host == self.host, TaskRow.host.in_(remote))
        return TaskRow.host == self.host

    def _record_unlaunched_preempted(self) -> None:
        """Tasks of a job preempted while starting that were never launched end at once."""
        with read_session(self._sessions) as session:
            ids = session.scalars(
                select(TaskRow.id)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(JobRow.state == JobState.PREEMPTING.value)
                .where(TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_(None), TaskRow.outcome.is_(None))
            ).all()
            session.rollback()
        for task_id in ids:
            self._record_result(
                task_id,
                self._never_started(
                    "preempted before it started", outcome=TaskOutcome.KILLED_PREEMPT
                ),
            )

    def _never_started(
        self,
        message: str,
        *,
        launch_failed: bool = False,
        outcome: TaskOutcome = TaskOutcome.KILLED_CANCEL,
    ) -> TaskResult:
        outcome = TaskOutcome.LAUNCH_FAILED if launch_failed else outcome
        now = self._clock.now().timestamp()
        return TaskResult(
            outcome=outcome, exit_code=None, started_at=None, finished_at=now, message=message
        )

    # -- cancel ----------------------------------------------------------------------------

    def stop_cancelled(self) -> None:
        """Cancel requests and preemptions become stop requests to the drivers, once per task."""
        self._record_unlaunched_preempted()
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(
                    TaskRow.id,
                    TaskRow.driver,
                    TaskRow.handle,
                    JobRow.cancel_requested_at,
                    JobRow.requeue_requested_at,
                )
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(JobRow.state.in_(ACTIVE_STATES))
                .where(
                    or_(
                        JobRow.cancel_requested_at.is_not(None),
                        JobRow.state == JobState.PREEMPTING.value,
                    )
                )
                .where(TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_not(None), TaskRow.outcome.is_(None))
                .where(TaskRow.stop_requested_at.is_(None))
                .where(self._my_tasks())
            ).all()
            session.rollback()
        for task_id, driver_name, handle, cancel_requested_at, requeue_requested_at in rows:
            # A requeue the job asked for stops it as Slurm's does: SIGTERM, not the
            # checkpoint signal (which its own trap would answer by asking again).
            asked = cancel_requested_at is not None or requeue_requested_at is not None
            reason = StopReason.CANCEL if asked else StopReason.PREEMPT
            self._stop_task(task_id, driver_name, handle, reason)
        if self.host is not None:
            self._stop_failed_gangs()

    def _stop_failed_gangs(self) -> None:
        """A sibling on another machine failed: stop this machine's tasks of the gang."""
        sibling = aliased(TaskRow)
        failed = exists().where(
            sibling.job_id == TaskRow.job_id,
            sibling.attempt == TaskRow.attempt,
            sibling.outcome.is_not(None),
            or_(
                sibling.outcome != TaskOutcome.EXITED.value,
                and_(sibling.exit_code.is_not(None), sibling.exit_code != 0),
            ),
        )
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(TaskRow.id, TaskRow.driver, TaskRow.handle)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(JobRow.state.in_(ACTIVE_STATES), TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_not(None), TaskRow.outcome.is_(None))
                .where(TaskRow.stop_requested_at.is_(None), self._my_tasks(), failed)
            ).all()
            session.rollback()
        for task_id, driver_name, handle in rows:
            self._stop_task(task_id, driver_name, handle)

    def _stop_task(
        self,
        task_id: int,
        driver_name: str,
        handle: dict[str, object],
        reason: StopReason = StopReason.CANCEL,
    ) -> None:
        try:
            self._deadline.call(self._drivers[driver_name].stop, handle, reason)
        except Exception as error:
            # Retried next pass (stop_requested_at stays NULL) until it gives up, when the
            # task is recorded as lost: better a clear end than a job stuck stopping.
            why = self._backoff.failed(("stop", task_id), error, f"stopping task {task_id}")
            if why is not None:
                self._record_result(task_id, self._lost(why))
            return
        self._backoff.succeeded(("stop", task_id))
        with loop_transaction(self._sessions) as session:
            session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.stop_requested_at.is_(None))
                .values(stop_requested_at=self._clock.now())
            )

    # -- observe ---------------------------------------------------------------------------

    def _observe_ends(self) -> list[tuple[int, int, TaskResult]]:
        """``(task id, job id, result)`` of this node's live tasks that have ended."""
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(TaskRow.id, TaskRow.job_id, TaskRow.driver, TaskRow.handle)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(JobRow.state.in_(ACTIVE_STATES))
                .where(TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_not(None), TaskRow.outcome.is_(None))
                .where(self._my_tasks())
            ).all()
            session.rollback()
        with self._known_lock:
            self._known = {task_id: (driver, handle) for task_id, _, driver, handle in rows}
        ended: list[tuple[int, int, TaskResult]] = []
        for task_id, job_id, driver_name, handle in rows:
            if not self._backoff.ready(("observe", task_id)):
                continue
            try:
                result = self._deadline.call(self._drivers[driver_name].observe, handle)
            except Exception as error:
                why = self._backoff.failed(("observe", task_id), error, f"observing task {task_id}")
                if why is None:
                    continue
                result = self._lost(why)
            else:
                self._backoff.succeeded(("observe", task_id))
            if result is not None:
                ended.append((task_id, job_id, result))
        return ended

    def _after_ends(self, ended: list[tuple[int, int, TaskResult]]) -> None:
        """Once the ends are recorded: stop the rest of a failed gang.

        No second round is woken for the ends: ``virtuai up`` observes them in the first
        half of a round (``LifecycleLoop.settle``), before the scheduling pass that hands
        out the room they free.  A woken round right after would only carry the release
        marks, and make the next submit wait out its duty pause (``LoopRunner``)."""
        failed_jobs = {
            job_id
            for _, job_id, result in ended
            if result.outcome is not TaskOutcome.EXITED or result.exit_code
        }
        for job_id in sorted(failed_jobs):
            self._stop_gang_siblings(job_id)

    def _lost(self, why: str) -> TaskResult:
        return TaskResult(
            outcome=TaskOutcome.LOST,
            exit_code=None,
            started_at=None,
            finished_at=self._clock.now().timestamp(),
            message=why,
        )

    # -- orphans and self-fencing ----------------------------------------------------------

    def reap_orphans(self) -> None:
        """Kill, then release, this node's tasks whose attempt is no longer the job's (the
        job was requeued when this node was lost) or whose job has ended meanwhile."""
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(TaskRow.id, TaskRow.driver, TaskRow.handle, TaskRow.outcome)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(or_(TaskRow.attempt != JobRow.attempt, JobRow.state.in_(_FINISHED)))
                .where(TaskRow.handle.is_not(None), TaskRow.released.is_(False))
                .where(self._my_tasks())
            ).all()
            session.rollback()
        released: list[int] = []
        for task_id, driver_name, handle, outcome in rows:
            driver = self._drivers.get(driver_name)
            if driver is None or not self._backoff.ready(("reap", task_id)):
                continue
            if task_id in self._unmarked:
                continue  # released already; marked with the next commit
            try:
                result = self._deadline.call(driver.observe, handle)
                if result is None:
                    log.warning("task %s belongs to a moved attempt: killing it", task_id)
                    self._deadline.call(driver.stop, handle, StopReason.FENCE)
                    continue
                if outcome is None:
                    self._record_result(task_id, result)
                self._deadline.call(driver.release, handle)
            except Exception as error:
                self._backoff.failed(("reap", task_id), error, f"reaping task {task_id}")
                continue
            released.append(task_id)
        if released:  # one commit for the pass; releasing again after a crash is harmless
            with loop_transaction(self._sessions) as session:
                session.execute(
                    update(TaskRow).where(TaskRow.id.in_(released)).values(released=True)
                )

    def fence_local(self) -> None:
        """This node lost the database: kill every task it knows of, at once (no grace),
        since the leader will give their jobs to other nodes.  Called from another thread."""
        with self._known_lock:
            known = list(self._known.values())
        for driver_name, handle in known:
            try:
                self._deadline.call(self._drivers[driver_name].stop, handle, StopReason.FENCE)
            except Exception:
                log.exception("could not kill a task while fencing this node")

    def _record_result(self, task_id: int, result: TaskResult) -> None:
        self._record_results([(task_id, 0, result)])

    def _record_results(self, results: list[tuple[int, int, TaskResult]]) -> None:
        if not results:
            return
        with loop_transaction(self._sessions) as session:
            self._write_results(session, results)

    @staticmethod
    def _write_results(session: Session, results: list[tuple[int, int, TaskResult]]) -> None:
        """``(task id, job id, result)``: each recorded once (``outcome IS NULL``)."""
        for task_id, _, result in results:
            session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.outcome.is_(None))
                .values(
                    outcome=result.outcome.value,
                    exit_code=result.exit_code,
                    message=result.message,
                    started_at=_utc(result.started_at),
                    finished_at=_utc(result.finished_at),
                )
            )

    def _stop_gang_siblings(self, job_id: int) -> None:
        """A gang is all or nothing: when one task fails, the others are stopped (like srun)."""
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(TaskRow.id, TaskRow.driver, TaskRow.handle)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.job_id == job_id, TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_not(None), TaskRow.outcome.is_(None))
                .where(TaskRow.stop_requested_at.is_(None), self._my_tasks())
            ).all()
            session.rollback()
        for task_id, driver_name, handle in rows:
            self._stop_task(task_id, driver_name, handle)

    def _release_calls(self, tasks: list[tuple[int, str, Handle | None]]) -> list[int]:
        """The drivers' ``release`` of ended tasks ``(id, driver, handle)``, side by side;
        the ids of those released."""
        calls: list[tuple[int, concurrent.futures.Future[None]]] = []
        for task_id, driver, handle in tasks:
            assert handle is not None
            if not self._backoff.ready(("release", task_id)):
                continue
            calls.append((task_id, self._deadline.submit(self._drivers[driver].release, handle)))
        released: list[int] = []
        for task_id, future in calls:
            try:
                self._deadline.result(future, "release")
            except Exception as error:
                # Nothing to fail: the job's end is recorded; what is left waits for a retry.
                self._backoff.failed(("release", task_id), error, f"releasing task {task_id}")
                continue
            released.append(task_id)
        return released

    @staticmethod
    def _mark_released(session: Session, task_ids: list[int]) -> None:
        if task_ids:
            session.execute(update(TaskRow).where(TaskRow.id.in_(task_ids)).values(released=True))


def _utc(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)
