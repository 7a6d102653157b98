"""The staging loop (the leader's): copies of datasets to the sites jobs run at.

A job submitted with ``--stage`` whose data is not where it runs has
``jobs.stage`` set, and waits pending (``control.gating`` holds it) until its
environment names the copy (``VIRTUAI_DATA``).  Per pass, with no transaction
open during the copies:

- every such job's copy (one per dataset and site, ``dataset_copies``) is
  started if there is none, if it failed or was made before the job was
  submitted (rsync again: only what changed is sent), or if it says
  ``copying`` but no copy runs in this process (a restart: rsync resumes);
- a running copy's progress becomes its row's ``progress`` and the waiting
  jobs' reason ("staging data x to site hpc: 45% (1.2 MiB at 3.00MB/s)");
- a finished copy becomes ``ready`` (the waiting jobs get ``VIRTUAI_DATA``, an
  event, and a touch that makes the scheduler look at once) or ``failed`` (the
  waiting jobs fail with rsync's message).

A source here is copied only if it still lies in its tenant's workspace (a
symbolic link swapped in after ``dataset add`` does not reach anything else).
One copy's failure never stops the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.sites import SiteLoop
from virtuai.domain.clock import Clock
from virtuai.domain.datasets import DATA_ENV, CopyState, staged_path
from virtuai.domain.sites import site_of_pool
from virtuai.domain.workload import JobState
from virtuai.drivers.slurm.staging import Copy, CopyTarget, inside, rsync_argv, write_known_hosts
from virtuai.drivers.slurm.transport import SiteUnreachable
from virtuai.errors import VirtuaiError
from virtuai.store.db import transaction
from virtuai.store.models import DatasetCopyRow, DatasetRow, JobEventRow, JobRow, SiteRow
from virtuai.store.transitions import switch_job_state

log = logging.getLogger(__name__)

CopyKey = tuple[int, str]  # (dataset id, site)
# rsync's exit codes for a lost connection or a timeout (ssh's own failures are 255).
TRANSIENT_RSYNC = frozenset({10, 12, 30, 35, 255})
MAX_RETRY_PAUSE_S = 60.0


@dataclass(frozen=True, slots=True)
class StagingConfig:
    workspaces_dir: Path


class StagingLoop:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sites: SiteLoop,
        clock: Clock,
        config: StagingConfig,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._sites = sites
        self._clock = clock
        self._config = config
        self._wake = wake
        self._copies: dict[CopyKey, Copy] = {}
        self._pause: dict[CopyKey, float] = {}
        self._retry_at: dict[CopyKey, float] = {}

    def tick(self) -> None:
        now = self._clock.now()
        with transaction(self._sessions) as session:
            waiting = self._waiting(session)
            to_start = self._apply(session, waiting, now)
        for key, copy_id in to_start:
            self._start(key, copy_id, now)

    def running(self) -> int:
        return sum(1 for c in self._copies.values() if not c.done)

    # -- one pass ---------------------------------------------------------------------------

    def _waiting(self, session: Session) -> dict[CopyKey, list[JobRow]]:
        jobs = session.scalars(
            select(JobRow)
            .where(JobRow.state == JobState.PENDING.value, JobRow.stage.is_(True))
            .where(JobRow.cancel_requested_at.is_(None))
            .order_by(JobRow.id)
        )
        by_copy: dict[CopyKey, list[JobRow]] = {}
        names: dict[tuple[int, str], int | None] = {}
        for job in jobs:
            site = site_of_pool(job.pool)
            if DATA_ENV in (job.env or {}) or site is None or job.data is None:
                continue
            ident = (job.tenant_id, job.data)
            if ident not in names:
                names[ident] = session.scalar(
                    select(DatasetRow.id).where(
                        DatasetRow.tenant_id == job.tenant_id, DatasetRow.name == job.data
                    )
                )
            dataset_id = names[ident]
            if dataset_id is not None:
                by_copy.setdefault((dataset_id, site), []).append(job)
        return by_copy

    def _apply(
        self, session: Session, waiting: dict[CopyKey, list[JobRow]], now: dt.datetime
    ) -> list[tuple[CopyKey, int]]:
        """Record what the copies did; the copies to (re)start (key, copy row id)."""
        to_start: list[tuple[CopyKey, int]] = []
        for key, jobs in waiting.items():
            dataset_id, site = key
            row = session.scalar(
                select(DatasetCopyRow).where(
                    DatasetCopyRow.dataset_id == dataset_id, DatasetCopyRow.site == site
                )
            )
            running = self._copies.get(key)
            if running is not None and running.done:
                self._copies.pop(key)
                if row is not None:
                    self._finished(session, row, running, now)
                running = None
            newest = max(j.submitted_at for j in jobs)
            stale = (
                row is None
                or (row.state == CopyState.COPYING.value and running is None)
                or (row.state != CopyState.COPYING.value and _before(row.started_at, newest))
            )
            if stale and self._retry_at.get(key, 0.0) > now.timestamp():
                stale = False  # a transient failure: pausing before the next try
            if stale and running is None:
                again = row is not None and row.state == CopyState.COPYING.value
                if row is None:
                    row = DatasetCopyRow(dataset_id=dataset_id, site=site)
                    session.add(row)
                row.state, row.progress, row.message = CopyState.COPYING.value, "", ""
                row.requested_at, row.started_at, row.finished_at = now, now, None
                row.bytes_done = 0
                session.flush()
                to_start.append((key, row.id))
                for job in jobs if not again else ():  # a restart or a retry: said already
                    _event(session, job, now, f"staging data {job.data} to site {site}")
            assert row is not None
            self._tell(session, row, jobs, running, now)
        for key in [k for k, c in self._copies.items() if k not in waiting and c.done]:
            # Every job waiting for it was cancelled meanwhile: the copy still says how it
            # ended (a later job reuses it if it is newer than that job).
            done = self._copies.pop(key)
            row = session.scalar(
                select(DatasetCopyRow).where(
                    DatasetCopyRow.dataset_id == key[0], DatasetCopyRow.site == key[1]
                )
            )
            if row is not None:
                self._finished(session, row, done, now)
        return to_start

    def _tell(
        self,
        session: Session,
        row: DatasetCopyRow,
        jobs: list[JobRow],
        running: Copy | None,
        now: dt.datetime,
    ) -> None:
        """The copy's news to the jobs waiting for it."""
        if running is not None and running.progress is not None:
            row.progress = running.progress.shown()
            row.bytes_done = running.progress.bytes_done
        for job in jobs:
            if row.state == CopyState.COPYING.value or _before(row.started_at, job.submitted_at):
                where = f"staging data {job.data} to site {row.site}"
                reason = f"{where}: {row.progress}" if row.progress else where
                if job.reason != reason:
                    job.reason = reason  # observed, as pending reasons are
            elif row.state == CopyState.READY.value:
                job.env = {**(job.env or {}), DATA_ENV: row.path}
                job.reason = "waiting for the scheduler"
                job.updated_at = now  # the scheduler looks again at once
                _event(session, job, now, f"data {job.data} staged to {row.site}:{row.path}")
            else:
                switch_job_state(
                    session,
                    job,
                    JobState.FAILED,
                    reason=f"staging data {job.data} to site {row.site} failed: {row.message}",
                    now=now,
                    finished_at=now,
                    queue_position=None,
                )

    def _finished(
        self, session: Session, row: DatasetCopyRow, done: Copy, now: dt.datetime
    ) -> None:
        key = (row.dataset_id, row.site)
        if done.status in TRANSIENT_RSYNC:
            # The connection, not the copy: it stays `copying` and starts again after a
            # doubling pause (rsync --partial resumes where it stopped).
            pause = min(MAX_RETRY_PAUSE_S, 2 * self._pause.get(key, 1.0))
            self._pause[key] = pause
            self._retry_at[key] = now.timestamp() + pause
            row.message = f"retrying in {pause:.0f} s: {done.error or done.status}"
            row.progress = row.message
            return
        self._pause.pop(key, None)
        row.finished_at = now
        if done.status == 0:
            row.state = CopyState.READY.value
            if done.progress is not None:
                row.progress, row.bytes_done = done.progress.shown(), done.progress.bytes_done
            row.message = f"copied in {(now - (row.started_at or now)).total_seconds():.1f} s"
        else:
            row.state = CopyState.FAILED.value
            row.message = done.error or f"rsync exited with status {done.status}"
        log.info("copy of dataset %s to site %s: %s", row.dataset_id, row.site, row.state)

    def _start(self, key: CopyKey, copy_id: int, now: dt.datetime) -> None:
        """Resolve where the copy goes and start rsync; a refusal fails the copy."""
        try:
            argv, dest = self._argv(key)
        except SiteUnreachable as error:
            # Not the copy's fault: it stays `copying` and the next pass tries again.
            log.warning("copy to site %s waits: %s", key[1], error.message)
            return
        except (VirtuaiError, OSError, ValueError) as error:
            message = getattr(error, "message", None) or str(error)
            self._record_refusal(key, message, now)
            return
        with transaction(self._sessions) as session:
            copy_row = session.get(DatasetCopyRow, copy_id)
            if copy_row is not None:
                copy_row.path = dest
        self._copies[key] = Copy(argv, on_done=self._wake).start()

    def _argv(self, key: CopyKey) -> tuple[list[str], str]:
        dataset_id, site_name = key
        with self._sessions() as session:
            dataset = session.get(DatasetRow, dataset_id)
            site = session.scalar(select(SiteRow).where(SiteRow.name == site_name))
            if dataset is None or site is None:
                raise ValueError("its dataset or site is gone")
            tenant = dataset.tenant.name
            source, name = dataset.path, dataset.name
            login, identity, known = site.login, site.identity_path, site.known_hosts
            session.rollback()
        if not inside(source, self._config.workspaces_dir / tenant):
            raise ValueError(f"{source} is not in the workspace of tenant {tenant}")
        driver = self._sites.driver(site_name)
        if driver is None:
            raise ValueError(f"site {site_name} is not connected")
        dest = driver.client.absolute(staged_path(tenant, name))
        known_path = None if identity is None else write_known_hosts(identity, known)
        return rsync_argv(source, CopyTarget(login, identity, known_path, dest)), dest

    def _record_refusal(self, key: CopyKey, message: str, now: dt.datetime) -> None:
        done = Copy([])
        done.status, done.error = 1, message
        self._copies[key] = done  # the next pass records it and fails the jobs


def _before(at: dt.datetime | None, when: dt.datetime) -> bool:
    return at is None or at < when


def _event(session: Session, job: JobRow, now: dt.datetime, reason: str) -> None:
    session.add(
        JobEventRow(job_id=job.id, at=now, from_state=job.state, to_state=job.state, reason=reason)
    )
