"""A leader paused while its transaction holds a row another instance needs does not hold up
the failover (#7: the SIGSTOP that took 10 s).

Two real ``virtuai up`` instances on one PostgreSQL, each in its own network namespace
(``support.netcluster``).  The test plays the paused leader's database session: it opens a
transaction with virtuai's own engine settings and its own code (a lease renewal; a job's
end charging the tenant's usage), leaves it open as a stopped process would, and stops the
real leader with SIGSTOP.  The other instance must take over and admit a new job within the
lease's time plus a margin: before the fix each hold lasted until the server's 10 s
``idle_in_transaction_session_timeout`` for the connection ended it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select

from support.netcluster import Instance, NetCluster, can_run
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.lease import loop_transaction, read_lease, renew_lease
from virtuai.store.models import JobRow, TaskRow, UsageRow
from virtuai.store.usage import record_task_usage

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.skipif(can_run() is not None, reason=str(can_run())),
]

# Lease time (1 s) + a round + the first pass, with room for a busy machine; the stall
# this guards against lasted 10 s.
ADMITTED_WITHIN_S = 4.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetCluster]:
    net = NetCluster(Path(tempfile.mkdtemp(prefix="vai-netcluster-fl-")), size=2, node_lost_s=8.0)
    try:
        net.start()
        yield net
    finally:
        net.stop()


@pytest.fixture
def engine(cluster: NetCluster) -> Iterator[Engine]:
    engine = create_db_engine(cluster.database_url)  # the instances' own connection settings
    try:
        yield engine
    finally:
        engine.dispose()


def _admitted_after_pausing(
    cluster: NetCluster,
    held: contextlib.ExitStack,
    leader: Instance,
    then: Callable[[], None] = lambda: None,
) -> float:
    """SIGSTOP ``leader`` while ``held`` keeps a transaction open, then call ``then``;
    seconds until the other instance admits a new job.  The transaction is rolled back."""
    survivor = next(n for n in cluster.instances if n is not leader)
    start = time.monotonic()
    leader.kill(signal.SIGSTOP)
    try:
        then()
        probe = cluster.submit(["true"], via=survivor)
        while cluster.job(probe)["state"] == "pending":
            assert time.monotonic() - start < 30, "no instance admitted the probe"
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        with contextlib.suppress(Exception):  # the server may have ended it (the fix)
            held.__exit__(RuntimeError, RuntimeError("abandoned"), None)  # rolls back
        leader.kill(signal.SIGCONT)
        for node in cluster.instances:
            node.wait_healthy()
        cluster.leader(timeout=10)


def test_a_leader_paused_inside_its_lease_renewal(cluster: NetCluster, engine: Engine) -> None:
    leader = cluster.leader()
    sessions = make_session_factory(engine)
    stack = contextlib.ExitStack()
    held = stack.enter_context(transaction(sessions))
    lease = read_lease(held)
    assert lease is not None and lease.holder_node == leader.name
    # The leader's renewal, caught between its UPDATE and its COMMIT: the lease row is
    # locked, and a takeover is an UPDATE of that row.
    assert renew_lease(held, holder=lease.holder, epoch=lease.epoch, now=dt.datetime.now(dt.UTC))
    took = _admitted_after_pausing(cluster, stack, leader)
    assert took < ADMITTED_WITHIN_S, f"failover took {took:.2f}s"


def test_a_leader_paused_while_charging_a_jobs_usage(cluster: NetCluster, engine: Engine) -> None:
    leader = cluster.leader()
    first = cluster.submit(["true"])
    assert cluster.wait([first])[first]["state"] == "succeeded"
    # Jobs on the other machine that end once the leader is stopped: that machine records
    # their ends, which charges the tenant's row, the row the paused session holds.
    go = cluster.public / f"go-{first}"
    until_go = ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"]
    cluster.admin("POST", f"/api/v1/nodes/{leader.name}/cordon")
    try:
        ending = [cluster.submit(until_go) for _ in range(2)]
        cluster.wait(ending, {"running"})
    finally:
        cluster.admin("POST", f"/api/v1/nodes/{leader.name}/uncordon")
    sessions = make_session_factory(engine)
    stack = contextlib.ExitStack()
    held = stack.enter_context(loop_transaction(sessions))  # as the node reconciler's
    job = held.get(JobRow, first)
    assert job is not None
    task = held.scalars(select(TaskRow).where(TaskRow.job_id == job.id)).first()
    assert task is not None
    # A job's end as the node reconciler records it: charged once, so charge it afresh.
    held.execute(delete(UsageRow).where(UsageRow.job_id == job.id))
    assert record_task_usage(held, job, task) is not None
    held.flush()  # the tenant's row is now locked until this transaction ends
    took = _admitted_after_pausing(cluster, stack, leader, then=go.touch)
    assert took < ADMITTED_WITHIN_S, f"failover took {took:.2f}s"
    finished = cluster.wait([first, *ending])
    assert {j["state"] for j in finished.values()} == {"succeeded"}
    assert cluster.duplicates([first, *ending]) == []
