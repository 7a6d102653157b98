"""Services' replicas' ports over a real database (SQLite and PostgreSQL): picked from the
reserved range, never a live replica's; the guarded set made exactly this machine's live
replicas' ports (a real nftables table when root and nft are there)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.control.replicaports import PortRange, ReplicaPorts
from virtuai.errors import DriverError
from virtuai.host.portguard import PortGuard
from virtuai.store.db import transaction
from virtuai.store.models import TaskRow, TenantRow, UserRow

LOW, HIGH = 30100, 30103


@pytest.fixture
def sessions(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(session_factory) as session:
        tenant, owner = rows.tenant(), rows.user()
        session.add_all([tenant, owner])
    return session_factory


def _add(sessions: sessionmaker[Session], port: int, host: str, **job: object) -> None:
    with transaction(sessions) as session:
        tenant = session.query(TenantRow).one()
        owner = session.query(UserRow).one()
        values = {"kind": "service", "state": "running", "master_port": port, **job}
        made = rows.job(owner, tenant, **values)
        session.add(made)
        session.flush()
        ended = made.state != "running"
        session.add(rows.task(made, node=host, host=host, outcome="exited" if ended else None))


def test_ports_come_from_the_range_and_skip_live_replicas(
    sessions: sessionmaker[Session],
) -> None:
    ports = ReplicaPorts(sessions, None, host="n1", ports=PortRange(LOW, HIGH))
    _add(sessions, LOW, "n1")
    _add(sessions, LOW + 1, "n2")  # another machine's: its port is skipped too
    _add(sessions, LOW + 2, "n1", state="cancelled")  # ended: free again
    with sessions() as session:
        picked = {ports.pick(session) for _ in range(20)}
    assert picked <= {LOW + 2, LOW + 3} and picked
    _add(sessions, LOW + 2, "n1")
    _add(sessions, LOW + 3, "n1")
    with sessions() as session, pytest.raises(DriverError, match="no free port"):
        ports.pick(session)
    assert ports.live_ports() == {LOW, LOW + 2, LOW + 3}  # this machine's only


@pytest.fixture
def guard() -> Iterator[PortGuard]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft")
    made = PortGuard(f"vai_test_{secrets.token_hex(4)}")
    try:
        yield made
    finally:
        made.drop()


def test_the_guarded_set_is_this_machines_live_replicas(
    sessions: sessionmaker[Session], guard: PortGuard
) -> None:
    clock = [0.0]
    ports = ReplicaPorts(sessions, guard, host="n1", interval_s=5, monotonic=lambda: clock[0])
    ports.tick()
    assert not guard.exists()  # no replica: no table
    ports.guard_port(LOW)  # before a launch
    assert guard.ports() == {LOW}
    _add(sessions, LOW + 1, "n1")
    _add(sessions, LOW + 2, "n2")
    clock[0] += 5
    ports.tick()  # LOW has no live replica (a stale port): dropped
    assert guard.ports() == {LOW + 1}
    with transaction(sessions) as session:
        for task in session.query(TaskRow).all():
            task.outcome = "exited"
    ports.tick()  # within the period: nothing asked
    assert guard.ports() == {LOW + 1}
    clock[0] += 5
    ports.tick()
    assert guard.ports() == set()
