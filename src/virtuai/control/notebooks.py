"""Notebooks in the control plane: where a running one listens, and the idle culler.

``notebook_upstream`` says where the proxy (of any machine) reaches a running
notebook: task 0's node's registered address (``nodes.address``; on one
machine with no address, loopback), the port chosen when the job started
(``jobs.master_port``) and the secret the launcher expects.  It is read from
the database every time the proxy's short cache misses, so a restarted server
finds its notebooks again with nothing kept in memory.

Idle culling is split in two, so that it holds with notebooks on several machines:

- ``NotebookActivity.tick`` runs on *every* server.  For the notebooks whose task 0 runs on
  its own node(s) it asks Jupyter (``/api/status``' ``last_activity``, which kernel messages
  and terminals move; a busy kernel counts as active now) with the key only that machine
  has, adds its own proxy's last request (a request reaching a notebook from another
  server's proxy is handed over through this one, ``proxy.peers``), and records the later
  of them in ``jobs.activity_at``.  The write only moves the time forward.
- ``NotebookCuller.tick`` (the leader's step) reads ``activity_at`` alone and stops a
  running notebook idle for its tenant's ``idle_timeout``, counted from the later of its
  start and its last recorded activity.  A notebook whose server no longer reports (gone,
  or Jupyter hung) is judged by what was recorded, so it is culled too.  The job is
  cancelled as a user would (SIGTERM: Jupyter shuts its kernels down), with
  ``cancel_reason`` "culled after 1h idle"; the home directory is not touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from virtuai.auth.jobtokens import notebook_secret
from virtuai.domain.clock import Clock
from virtuai.domain.notebooks import AUTH_HEADER, KIND, SECRET_HEADER, base_path, culled_reason
from virtuai.domain.workload import JobState
from virtuai.store.db import read_session, transaction
from virtuai.store.models import JobRow, NodeRow, TaskRow, TenantRow
from virtuai.store.transitions import request_cancel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one replica of a workload listens, and the secret it wants from the proxy."""

    host: str
    port: int
    secret: str
    # The node it runs on ("" if unknown): a proxy on another machine hands the request to
    # that node's server (``proxy.peers``), which alone knows the secret there.
    node: str = ""
    job_id: int = 0  # the job it belongs to (0: unknown), named when it fails a request

    def url(self, scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def notebook_upstream(session: Session, job: JobRow, key: bytes) -> Upstream | None:
    """Where ``job`` (a running notebook) listens now; ``None`` if it does not yet."""
    if job.state != JobState.RUNNING.value or not job.master_port or not key:
        return None
    node = session.scalar(
        select(TaskRow.node).where(
            TaskRow.job_id == job.id, TaskRow.attempt == job.attempt, TaskRow.index == 0
        )
    )
    if node is None:
        return None
    address = session.scalar(select(NodeRow.address).where(NodeRow.name == node))
    return Upstream(
        host=address or "127.0.0.1",
        port=job.master_port,
        secret=notebook_secret(key, job.id, job.attempt),
        node=node,
        job_id=job.id,
    )


@dataclass(frozen=True, slots=True)
class CullerConfig:
    job_token_key: bytes
    default_idle_timeout_s: int = 3600
    interval_s: float = 30.0
    status_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class _Running:
    job_id: int
    user: str
    name: str
    idle_timeout_s: int
    # The later of its start and its last recorded activity (epoch seconds).
    active_at: float
    upstream: Upstream | None


def _running_notebooks(sessions: sessionmaker[Session], config: CullerConfig) -> list[_Running]:
    with read_session(sessions) as session:
        rows = session.execute(
            select(JobRow, TenantRow.notebook_idle_timeout_s)
            .join(TenantRow, TenantRow.id == JobRow.tenant_id)
            .where(
                JobRow.kind == KIND,
                JobRow.state == JobState.RUNNING.value,
                JobRow.cancel_requested_at.is_(None),
            )
        ).all()
        result = [
            _Running(
                job_id=job.id,
                user=job.user.name,
                name=job.name,
                idle_timeout_s=timeout or config.default_idle_timeout_s,
                active_at=max(
                    (job.started_at or job.submitted_at).timestamp(),
                    job.activity_at.timestamp() if job.activity_at else 0.0,
                ),
                upstream=notebook_upstream(session, job, config.job_token_key),
            )
            for job, timeout in rows
        ]
        session.rollback()
    return result


class NotebookActivity:
    """Every server's step: when its own nodes' notebooks were last used, into the database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: CullerConfig,
        own_nodes: frozenset[str],
        proxy_activity: Callable[[int], float | None] = lambda _job: None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._config = config
        self._own_nodes = own_nodes
        # Epoch seconds of the last request this server's proxy forwarded to a job.
        self._proxy_activity = proxy_activity
        self._next_at = 0.0

    def tick(self) -> None:
        now = self._clock.now().timestamp()
        if now < self._next_at:
            return
        self._next_at = now + self._config.interval_s
        seen: dict[int, float] = {}
        for item in _running_notebooks(self._sessions, self._config):
            if item.upstream is None or item.upstream.node not in self._own_nodes:
                continue
            last = max(item.active_at, self._proxy_activity(item.job_id) or 0.0)
            try:
                last = max(last, self._jupyter_activity(item.upstream, item))
            except Exception as error:  # one notebook's trouble never stops the others
                # Not recorded as activity: a Jupyter that does not answer is idle as far
                # as anyone can tell, so a hung one is culled too.
                log.warning("notebook job %d: no activity report (%s)", item.job_id, error)
            if last > item.active_at:
                seen[item.job_id] = last
        if seen:
            self._record(seen)

    def _jupyter_activity(self, upstream: Upstream, item: _Running) -> float:
        """Epoch seconds of Jupyter's last activity (now, if a kernel is busy)."""
        headers = {SECRET_HEADER: upstream.secret, AUTH_HEADER: "bearer"}
        api = upstream.url() + base_path(item.user, item.name) + "api"
        last = 0.0
        with httpx.Client(
            timeout=self._config.status_timeout_s, trust_env=False, headers=headers
        ) as client:
            status = client.get(f"{api}/status", params={"no_track_activity": "1"})
            status.raise_for_status()
            reported = status.json().get("last_activity")
            if isinstance(reported, str):
                last = dt.datetime.fromisoformat(reported).timestamp()
            # Asking must not count as activity (Jupyter counts API requests but these).
            kernels = client.get(f"{api}/kernels", params={"no_track_activity": "1"})
            kernels.raise_for_status()
            if any(k.get("execution_state") == "busy" for k in kernels.json()):
                return self._clock.now().timestamp()
        return last

    def _record(self, seen: dict[int, float]) -> None:
        with transaction(self._sessions) as session:
            for job_id, last in seen.items():
                at = dt.datetime.fromtimestamp(last, dt.UTC)
                # Only forward: another server's older report never takes activity back.
                session.execute(
                    update(JobRow)
                    .where(
                        JobRow.id == job_id,
                        or_(JobRow.activity_at.is_(None), JobRow.activity_at < at),
                    )
                    .values(activity_at=at)
                )


class NotebookCuller:
    """The leader's step: stop notebooks idle for their tenant's timeout."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, config: CullerConfig) -> None:
        self._sessions = sessions
        self._clock = clock
        self._config = config
        self._next_at = 0.0

    def tick(self) -> None:
        now = self._clock.now().timestamp()
        if now < self._next_at:
            return
        self._next_at = now + self._config.interval_s
        for item in _running_notebooks(self._sessions, self._config):
            if now - item.active_at >= item.idle_timeout_s:
                self._cull(item)

    def _cull(self, item: _Running) -> None:
        reason = culled_reason(item.idle_timeout_s)
        with transaction(self._sessions) as session:
            job = session.get(JobRow, item.job_id)
            if job is None or job.state != JobState.RUNNING.value or job.cancel_requested_at:
                return
            job.cancel_reason = reason
            request_cancel(session, job, now=self._clock.now(), actor="culler", why=reason)
        log.info("notebook %s/%s (job %d): %s", item.user, item.name, item.job_id, reason)
