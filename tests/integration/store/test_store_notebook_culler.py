"""The idle culler over a real database: tenants' own timeouts, the reason it records, and a
notebook whose Jupyter does not answer (judged by its start and the proxy's traffic); each
server records only its own nodes' notebooks' activity, and only forward in time."""

from __future__ import annotations

import datetime as dt
import socket

from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.control.notebooks import CullerConfig, NotebookActivity, NotebookCuller
from virtuai.store.db import transaction
from virtuai.store.models import JobRow, NodeRow


class Fixed:
    def __init__(self, now: dt.datetime) -> None:
        self.at = now

    def now(self) -> dt.datetime:
        return self.at


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_idle_notebooks_are_culled_by_their_tenants_timeout(
    session_factory: sessionmaker[Session],
) -> None:
    started = rows.T0
    with transaction(session_factory) as session:
        quick, slow = rows.tenant("quick", notebook_idle_timeout_s=600), rows.tenant("slow")
        ada = rows.user("ada")
        session.add_all([quick, slow, ada])
        session.flush()
        session.add(
            NodeRow(
                name="node-1", site="local", pool="default", cpu_milli=1000, memory=2**30,
                updated_at=started, address="127.0.0.1",
            )
        )  # fmt: skip
        ids = []
        for team in (quick, slow):
            job = rows.job(
                ada, team, kind="notebook", name=team.name, state="running",
                started_at=started, master_port=_closed_port(),
            )  # fmt: skip
            session.add(job)
            session.flush()
            session.add(rows.task(job, handle={"key": "x"}))
            ids.append(job.id)
    clock = Fixed(started + dt.timedelta(seconds=601))
    seen: dict[int, float] = {}
    config = CullerConfig(job_token_key=b"k" * 32, default_idle_timeout_s=3600, interval_s=0)
    activity = NotebookActivity(
        session_factory, clock, config, own_nodes=frozenset({"node-1"}), proxy_activity=seen.get
    )
    culler = NotebookCuller(session_factory, clock, config)
    seen[ids[1]] = (started + dt.timedelta(seconds=3000)).timestamp()
    activity.tick()  # Jupyter does not answer: the start and the proxy's traffic decide
    culler.tick()
    with transaction(session_factory) as session:
        quick_job, slow_job = (session.get(JobRow, i) for i in ids)
        assert quick_job is not None and slow_job is not None
        assert quick_job.cancel_reason == "culled after 10m idle"
        assert quick_job.cancel_requested_at == clock.at
        assert quick_job.activity_at is None
        assert slow_job.cancel_requested_at is None
        assert slow_job.activity_at == started + dt.timedelta(seconds=3000)
    # The proxy's memory is this process's only: once recorded, the culler needs no more of it.
    seen.clear()
    clock.at = started + dt.timedelta(seconds=3000 + 3599)
    culler.tick()
    with transaction(session_factory) as session:
        slow_job = session.get(JobRow, ids[1])
        assert slow_job is not None and slow_job.cancel_requested_at is None
    clock.at = started + dt.timedelta(seconds=3000 + 3600)
    culler.tick()
    with transaction(session_factory) as session:
        slow_job = session.get(JobRow, ids[1])
        assert slow_job is not None and slow_job.cancel_reason == "culled after 1h idle"


def test_a_server_records_only_its_own_nodes_notebooks_and_only_forward(
    session_factory: sessionmaker[Session],
) -> None:
    started = rows.T0
    with transaction(session_factory) as session:
        team, ada = rows.tenant("team"), rows.user("ada")
        session.add_all([team, ada])
        session.flush()
        for name in ("node-1", "node-2"):
            session.add(
                NodeRow(
                    name=name, site="local", pool="default", cpu_milli=1000, memory=2**30,
                    updated_at=started, address="127.0.0.1",
                )
            )  # fmt: skip
        ids = []
        for node in ("node-1", "node-2"):
            job = rows.job(
                ada, team, kind="notebook", name=node, state="running",
                started_at=started, master_port=_closed_port(),
            )  # fmt: skip
            session.add(job)
            session.flush()
            session.add(rows.task(job, node=node, handle={"key": "x"}))
            ids.append(job.id)
    clock = Fixed(started + dt.timedelta(seconds=60))
    config = CullerConfig(job_token_key=b"k" * 32, interval_s=0)
    late = (started + dt.timedelta(seconds=50)).timestamp()
    early = (started + dt.timedelta(seconds=20)).timestamp()
    first = NotebookActivity(
        session_factory, clock, config, frozenset({"node-1"}), {ids[0]: late, ids[1]: late}.get
    )
    second = NotebookActivity(
        session_factory, clock, config, frozenset({"node-1"}), {ids[0]: early}.get
    )
    first.tick()
    second.tick()  # an older report (another server's, or a stale one) takes nothing back
    with transaction(session_factory) as session:
        own, other = (session.get(JobRow, i) for i in ids)
        assert own is not None and other is not None
        assert own.activity_at == started + dt.timedelta(seconds=50)
        assert other.activity_at is None  # node-2's notebook: its own server's to report
