"""The site loop: keeps every Slurm site's driver, inventory and view of its queue current.

Per site and per pass, with no transaction open during the calls:

- the drivers: one ``SlurmSiteDriver`` per site that is not removed, kept in the
  drivers mapping the life-cycle loop and the API share (``site:<name>``), so
  jobs admitted onto a site's nodes are launched, observed, stopped and read
  through it like any other;
- every ``inventory_interval_s``: ``sinfo`` -> the site's nodes in the
  inventory (pool ``<site>:<partition>``; unschedulable while the site drains,
  is unreachable or a node is down), partitions, capacity, health;
- every pass: one ``squeue`` (and one ``sacct`` for jobs that left it) for all
  of the site's running attempts; Slurm's words (``PENDING (Resources)``)
  become the job's reason; an unreachable site keeps every job in its last
  known state with the reason "site hpc unreachable since ...", and the
  transport retries with backoff;
- preemption: the checkpoint signal went out with the stop request; after the
  job's grace the loop ``scancel``s it (``virtuai`` then requeues it);
- a draining site with no job left is removed and its driver closed.

A failing site never stops the others: each is processed on its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.domain.sites import SiteState
from virtuai.domain.workload import JobState
from virtuai.drivers.base import Driver
from virtuai.drivers.slurm.driver import SiteConfig, SlurmSiteDriver, build_site_driver
from virtuai.errors import VirtuaiError
from virtuai.store.db import transaction
from virtuai.store.inventory import mark_unschedulable_except, record_inventory
from virtuai.store.models import JobRow, NodeRow, SiteRow, TaskRow

log = logging.getLogger(__name__)

EXPLAINED_STATES = [JobState.FAILED.value, JobState.TIMED_OUT.value]
LOST_REASON = "lost: its supervisor vanished"
ACTIVE_JOB_STATES = [JobState.STARTING.value, JobState.RUNNING.value, JobState.PREEMPTING.value]


@dataclass(frozen=True, slots=True)
class SiteLoopConfig:
    inventory_interval_s: float = 10.0
    max_sessions: int = 8  # SSH channels at once per site
    kill_grace_s: int = 30  # preemption grace when a job names none


def driver_key(site: str) -> str:
    return f"site:{site}"


def driver_of(row: SiteRow, max_sessions: int) -> SlurmSiteDriver:
    """A site's driver, as its row describes it (connected lazily, at its first command)."""
    config = SiteConfig(
        name=row.name,
        token=row.token,
        pool=row.pool,
        partition=row.partition,
        account_map=dict(row.account_map),
        max_jobs=row.max_jobs,
    )
    return build_site_driver(
        config,
        login=row.login,
        identity_path=row.identity_path,
        known_hosts=row.known_hosts,
        max_sessions=max_sessions,
    )


class SiteLoop:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        drivers: MutableMapping[str, Driver],
        clock: Clock,
        config: SiteLoopConfig | None = None,
    ) -> None:
        self._sessions = sessions
        self._drivers = drivers
        self._clock = clock
        self._config = config or SiteLoopConfig()
        self._sites: dict[str, SlurmSiteDriver] = {}
        self._inventory_at: dict[str, float] = {}
        self._killed: set[str] = set()

    def tick(self) -> None:
        with self._sessions() as session:
            rows = list(
                session.scalars(select(SiteRow).where(SiteRow.state != SiteState.REMOVED.value))
            )
            session.expunge_all()
        self._sync_drivers(rows)
        for row in rows:
            driver = self._sites.get(row.name)
            if driver is None:
                continue
            try:
                self._pass(row, driver)
            except VirtuaiError as error:
                self._unreachable(row, driver, error.message)
            except Exception:  # one bad site must not stop the others
                log.exception("site %s: pass failed", row.name)

    def driver(self, name: str) -> SlurmSiteDriver | None:
        return self._sites.get(name)

    def node_names(self) -> frozenset[str]:
        """The nodes of every site this loop drives: no machine of ours hosts their tasks."""
        return frozenset().union(*(d.node_names() for d in self._sites.values()))

    def close(self) -> None:
        for name in list(self._sites):
            self._drop(name)

    # -- drivers ----------------------------------------------------------------------------

    def _sync_drivers(self, rows: list[SiteRow]) -> None:
        live = {row.name for row in rows}
        for name in list(self._sites):
            if name not in live:
                self._drop(name)
        for row in rows:
            if row.name not in self._sites:
                self._sites[row.name] = driver = self._build(row)
                self._drivers[driver.name] = driver

    def _build(self, row: SiteRow) -> SlurmSiteDriver:
        driver = driver_of(row, self._config.max_sessions)
        # Until the first sinfo answers, the nodes recorded earlier are still this site's.
        with self._sessions() as session:
            driver.known_nodes = frozenset(
                session.scalars(select(NodeRow.name).where(NodeRow.site == row.name))
            )
        return driver

    def _drop(self, name: str) -> None:
        driver = self._sites.pop(name)
        self._drivers.pop(driver.name, None)
        self._inventory_at.pop(name, None)
        try:
            driver.close()
        except Exception:
            log.exception("site %s: closing its connection failed", name)

    # -- one site, one pass -----------------------------------------------------------------

    def _pass(self, row: SiteRow, driver: SlurmSiteDriver) -> None:
        now = self._clock.now()
        due = self._inventory_at.get(row.name, 0.0) + self._config.inventory_interval_s
        if now.timestamp() >= due:
            driver.refresh_inventory()
            self._inventory_at[row.name] = now.timestamp()
            self._record_inventory(row, driver, now)
        driver.retry_stops()
        handles = self._active_handles(row.name)
        driver.refresh(str(h["slurm_id"]) for _, h in handles)
        self._record_queue(row, driver, handles, now)
        self._kill_after_grace(row.name, driver, now)
        self._explain_endings(row, now)
        if row.state == SiteState.DRAINING.value and not handles:
            self._remove(row, now)

    def _active_handles(self, site: str) -> list[tuple[int, dict[str, object]]]:
        """(job id, handle) of every attempt the site runs now, once per Slurm job.

        Any task of the attempt still without an outcome keeps it wanted: the tasks of
        a gang share one Slurm job, and task 0 may be recorded before its siblings."""
        with self._sessions() as session:
            rows = session.execute(
                select(TaskRow.job_id, TaskRow.handle)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.driver == driver_key(site))
                .where(TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_not(None), TaskRow.outcome.is_(None))
                .order_by(TaskRow.job_id, TaskRow.index)
            ).all()
            session.rollback()
        once: dict[str, tuple[int, dict[str, object]]] = {}
        for job_id, handle in rows:
            if handle:
                once.setdefault(str(handle["slurm_id"]), (job_id, handle))
        return list(once.values())

    def _record_inventory(self, row: SiteRow, driver: SlurmSiteDriver, now: dt.datetime) -> None:
        seen = driver.seen
        nodes = driver.inventory() if row.state == SiteState.ACTIVE.value else []
        healthy = [n for n in seen.nodes if n.healthy]
        with transaction(self._sessions) as session:
            record_inventory(session, nodes, now)
            mark_unschedulable_except(session, row.name, [n.name for n in nodes])
            site = session.get(SiteRow, row.id)
            if site is None:
                return
            site.partitions = [
                {"name": p.name, "default": p.default, "max_time_s": p.max_time_s, "state": p.state}
                for p in seen.partitions
            ]
            site.capacity = {
                "nodes": len(seen.nodes),
                "nodes_up": len(healthy),
                "cpus": sum(n.cpus for n in healthy),
                "memory_mb": sum(n.memory_mb for n in healthy),
                "gpus": sum(n.gpus for n in healthy),
            }
            site.expected_wait_s = None if seen.backlog is None else seen.backlog.expected_wait_s()
            site.health = "ok" if len(healthy) == len(seen.nodes) and healthy else "degraded"
            down = [f"{n.name} {n.state}" for n in seen.nodes if not n.healthy]
            site.message = f"nodes not up: {', '.join(down)}" if down else ""
            site.updated_at = now

    def _record_queue(
        self,
        row: SiteRow,
        driver: SlurmSiteDriver,
        handles: list[tuple[int, dict[str, object]]],
        now: dt.datetime,
    ) -> None:
        queue = driver.seen.queue
        with transaction(self._sessions) as session:
            site = session.get(SiteRow, row.id)
            if site is not None:
                site.queue_depth = sum(1 for e in queue.values() if e.state == "PENDING")
                site.last_seen_at = now
                if site.unreachable_since is not None:
                    site.unreachable_since = None
                    site.health = "ok" if site.health == "unreachable" else site.health
                    site.message = ""
            for job_id, handle in handles:
                shown = driver.status(handle)
                if not shown:
                    continue
                job = session.get(JobRow, job_id)
                reason = f"slurm job {handle['slurm_id']} at site {row.name}: {shown}"
                if job is not None and job.state == JobState.RUNNING.value and job.reason != reason:
                    job.reason = reason  # observed state, not an event (as pending reasons)

    def _unreachable(self, row: SiteRow, driver: SlurmSiteDriver, message: str) -> None:
        now = self._clock.now()
        if driver.seen.unreachable_since is None:
            driver.seen.unreachable_since = now.timestamp()
        driver.seen.error = message
        reason = driver.unreachable_reason()
        log.warning("%s", reason)
        with transaction(self._sessions) as session:
            site = session.get(SiteRow, row.id)
            if site is not None:
                site.health = "unreachable"
                site.message = message
                site.unreachable_since = site.unreachable_since or now
                site.updated_at = now
            jobs = session.scalars(
                select(JobRow)
                .join(TaskRow, TaskRow.job_id == JobRow.id)
                .where(TaskRow.driver == driver_key(row.name), TaskRow.outcome.is_(None))
                .where(TaskRow.attempt == JobRow.attempt, TaskRow.index == 0)
                .where(JobRow.state == JobState.RUNNING.value)
            )
            for job in jobs:
                if job.reason != reason:
                    job.reason = reason

    def _kill_after_grace(self, site: str, driver: SlurmSiteDriver, now: dt.datetime) -> None:
        """Preempted jobs that got their checkpoint signal: scancel once the grace is over."""
        with self._sessions() as session:
            rows = session.execute(
                select(TaskRow.handle, TaskRow.stop_requested_at, JobRow.checkpoint_grace_s)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .where(TaskRow.driver == driver_key(site))
                .where(TaskRow.attempt == JobRow.attempt, TaskRow.outcome.is_(None))
                .where(TaskRow.stop_requested_at.is_not(None))
                .where(JobRow.state == JobState.PREEMPTING.value)
            ).all()
            session.rollback()
        for handle, asked_at, grace in rows:
            slurm_id = str(handle["slurm_id"])
            limit = grace if grace is not None else self._config.kill_grace_s
            if slurm_id in self._killed or (now - asked_at).total_seconds() < limit:
                continue
            driver.kill(handle)
            self._killed.add(slurm_id)

    def _explain_endings(self, row: SiteRow, now: dt.datetime) -> None:
        """Jobs the site ended (NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, PREEMPTED) say so in Slurm's
        words: the life cycle's reason is the same for every driver ("lost ...")."""
        since = now - dt.timedelta(minutes=10)
        with transaction(self._sessions) as session:
            rows = session.execute(
                select(JobRow, TaskRow.message)
                .join(TaskRow, TaskRow.job_id == JobRow.id)
                .where(TaskRow.driver == driver_key(row.name), TaskRow.index == 0)
                .where(TaskRow.attempt == JobRow.attempt)
                .where(JobRow.state.in_(EXPLAINED_STATES), JobRow.finished_at >= since)
            ).all()
            for job, message in rows:
                if not message or not message.startswith("slurm job") or message in job.reason:
                    continue
                if LOST_REASON in job.reason:
                    job.reason = job.reason.replace(LOST_REASON, message)
                else:
                    job.reason = f"{job.reason} ({message})"

    def _remove(self, row: SiteRow, now: dt.datetime) -> None:
        with transaction(self._sessions) as session:
            site = session.get(SiteRow, row.id)
            if site is None or site.state != SiteState.DRAINING.value:
                return
            left = session.scalar(
                select(func.count())
                .select_from(JobRow)
                .join(TaskRow, TaskRow.job_id == JobRow.id)
                .where(TaskRow.driver == driver_key(row.name))
                .where(JobRow.state.in_(ACTIVE_JOB_STATES))
            )
            if left:
                return
            site.state = SiteState.REMOVED.value
            site.updated_at = now
            mark_unschedulable_except(session, row.name, [])
        log.info("site %s drained and removed", row.name)
