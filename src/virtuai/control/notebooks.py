"""Notebooks in the control plane: where a running one listens, and the idle culler.

``notebook_upstream`` says where the proxy (of any machine) reaches a running
notebook: task 0's node's registered address (``nodes.address``; on one
machine with no address, loopback), the port chosen when the job started
(``jobs.master_port``) and the secret the launcher expects.  It is read from
the database every time the proxy's short cache misses, so a restarted server
finds its notebooks again with nothing kept in memory.

``NotebookCuller.tick`` (the leader's step) stops a running notebook idle for
its tenant's ``idle_timeout``: idle means no request through the proxy *and*
no activity in Jupyter itself (``/api/status``' ``last_activity``, which kernel
messages and terminals move; a busy kernel counts as active).  The job is
cancelled as a user would (SIGTERM: Jupyter shuts its kernels down), with
``cancel_reason`` "culled after 1h idle"; the home directory is not touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import select
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
    started_at: dt.datetime
    upstream: Upstream | None


class NotebookCuller:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: CullerConfig,
        proxy_activity: Callable[[int], float | None] = lambda _job: None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._config = config
        # Epoch seconds of the last request this server's proxy forwarded to a job.
        self._proxy_activity = proxy_activity
        self._next_at = 0.0

    def tick(self) -> None:
        now = self._clock.now()
        if now.timestamp() < self._next_at:
            return
        self._next_at = now.timestamp() + self._config.interval_s
        for item in self._running():
            try:
                last = self._last_activity(item)
            except Exception as error:  # one notebook's trouble never stops the others
                # A Jupyter that does not answer is idle as far as anyone can tell: judged by
                # its start and the proxy's traffic alone, so a hung one is culled too.
                log.warning("notebook job %d: no activity report (%s)", item.job_id, error)
                last = self._known_activity(item)
            idle = self._clock.now().timestamp() - last
            if idle >= item.idle_timeout_s:
                self._cull(item)

    def _running(self) -> list[_Running]:
        with read_session(self._sessions) as session:
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
                    idle_timeout_s=timeout or self._config.default_idle_timeout_s,
                    started_at=job.started_at or job.submitted_at,
                    upstream=notebook_upstream(session, job, self._config.job_token_key),
                )
                for job, timeout in rows
            ]
            session.rollback()
        return result

    def _known_activity(self, item: _Running) -> float:
        seen = self._proxy_activity(item.job_id)
        return max(item.started_at.timestamp(), seen or 0.0)

    def _last_activity(self, item: _Running) -> float:
        """Epoch seconds of the notebook's last activity (now, if a kernel is busy)."""
        last = self._known_activity(item)
        if item.upstream is None:
            return last
        headers = {SECRET_HEADER: item.upstream.secret, AUTH_HEADER: "bearer"}
        api = item.upstream.url() + base_path(item.user, item.name) + "api"
        with httpx.Client(
            timeout=self._config.status_timeout_s, trust_env=False, headers=headers
        ) as client:
            status = client.get(f"{api}/status", params={"no_track_activity": "1"})
            status.raise_for_status()
            reported = status.json().get("last_activity")
            if isinstance(reported, str):
                last = max(last, dt.datetime.fromisoformat(reported).timestamp())
            # Asking must not count as activity (Jupyter counts API requests but these).
            kernels = client.get(f"{api}/kernels", params={"no_track_activity": "1"})
            kernels.raise_for_status()
            if any(k.get("execution_state") == "busy" for k in kernels.json()):
                return self._clock.now().timestamp()
        return last

    def _cull(self, item: _Running) -> None:
        reason = culled_reason(item.idle_timeout_s)
        with transaction(self._sessions) as session:
            job = session.get(JobRow, item.job_id)
            if job is None or job.state != JobState.RUNNING.value or job.cancel_requested_at:
                return
            job.cancel_reason = reason
            request_cancel(session, job, now=self._clock.now(), actor="culler", why=reason)
        log.info("notebook %s/%s (job %d): %s", item.user, item.name, item.job_id, reason)
