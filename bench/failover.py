"""Failover of the scheduling lease under load (``docs/benchmarks.md``, Failover).

Run as root: ``.venv/bin/python bench/failover.py`` (``--kills 21``).

PostgreSQL and three ``virtuai up`` instances, each in its own network
namespace with its own address (``tests/support/netcluster.py``).  A thread
submits a short job every 0.2 s through whichever instance answers.  The
leader is then hit ``--kills`` times in turn with ``kill -9``, ``SIGSTOP`` and
its link cut.  Each time a probe job is submitted through a surviving instance
at once, and the *failover time* is from the fault to the probe's admission by
the new leader (the old one cannot admit: it is dead, paused or cut off).
Afterwards the killed instance is started again, the paused one continued,
the link restored, and the next round waits for three healthy instances.

At the end every job must have succeeded exactly once: ``lost`` counts jobs
that did not, ``duplicated`` jobs admitted or ended more often than their
attempts allow plus jobs whose two attempts ran at the same time (each job
holds a lock named by its id; a second holder records an overlap).

``--hold lease|tenant`` (with ``--modes SIGSTOP``) stops the leader at the worst moment:
the bench opens, with virtuai's own engine settings and code, the transaction a stopped
leader would have left open (its lease renewal between UPDATE and COMMIT; a job's end
charging the tenant's row, as the node reconciler opens it), then sends SIGSTOP; the
transaction is rolled back once the probe is admitted.  That is how a rare stall (one
SIGSTOP in 21 took 10 s, #7) is measured every time.

Last line: ``failover_s_p50=X failover_s_max=X lost=N duplicated=N``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from support.netcluster import NetCluster, can_run
from virtuai.store import lease
from virtuai.store.db import create_db_engine, make_session_factory, transaction
from virtuai.store.models import JobRow, TaskRow, UsageRow
from virtuai.store.usage import record_task_usage

MODES = ("kill -9", "SIGSTOP", "link down")
HOLDS = ("none", "lease", "tenant")


def hold(cluster: NetCluster, what: str) -> contextlib.ExitStack:
    """Open the transaction a leader stopped at the worst moment leaves open (``what``)."""
    stack = contextlib.ExitStack()
    engine = create_db_engine(cluster.database_url)
    stack.callback(engine.dispose)
    sessions = make_session_factory(engine)
    if what == "lease":
        session = stack.enter_context(transaction(sessions))
        seen = lease.read_lease(session)
        assert seen is not None
        now = dt.datetime.now(dt.UTC)
        lease.renew_lease(session, holder=seen.holder, epoch=seen.epoch, now=now)
        return stack
    ended = select(TaskRow.id).where(
        TaskRow.finished_at.is_not(None), TaskRow.started_at.is_not(None)
    )
    deadline = time.monotonic() + 60
    while True:  # the first round may come before any job of the load has ended
        with transaction(sessions) as session:
            task_id = session.scalar(ended.limit(1))
        if task_id is not None:
            break
        assert time.monotonic() < deadline, "no job of the load ended within 60 s"
        time.sleep(0.2)
    # As the node reconciler opens it (an older tree has no loop_transaction).
    opener = getattr(lease, "loop_transaction", transaction)
    session = stack.enter_context(opener(sessions))
    task = session.get(TaskRow, task_id)
    assert task is not None
    job = session.get(JobRow, task.job_id)
    assert job is not None
    session.execute(delete(UsageRow).where(UsageRow.job_id == job.id))
    record_task_usage(session, job, task)
    session.flush()
    return stack


def load(cluster: NetCluster, ids: list[int], stop: threading.Event) -> None:
    """A steady stream of short jobs through any instance that answers."""
    while not stop.wait(0.2):
        with contextlib.suppress(AssertionError):
            ids.append(cluster.submit(cluster.guarded(0.3)))


def admitted(cluster: NetCluster, job_id: int, since: float, limit: float = 30.0) -> float:
    while True:
        with contextlib.suppress(AssertionError):
            if cluster.job(job_id)["state"] != "pending":
                return time.monotonic() - since
        if time.monotonic() - since > limit:
            raise SystemExit(f"job {job_id} was not admitted within {limit}s")
        time.sleep(0.02)


def one_round(cluster: NetCluster, mode: str, held: str = "none") -> float:
    leader = cluster.leader(timeout=30)
    survivor = next(n for n in cluster.instances if n is not leader)
    paused = None
    for _ in range(5) if mode == "SIGSTOP" and held != "none" else ():
        try:  # on a starved machine the server may end it before the stop (its idle limit)
            paused = hold(cluster, held)
            break
        except DBAPIError:
            continue
    start = time.monotonic()
    if mode == "kill -9":
        leader.kill(signal.SIGKILL)
    elif mode == "SIGSTOP":
        leader.kill(signal.SIGSTOP)
    else:
        leader.link(up=False)
    probe = cluster.submit(["true"], via=survivor)
    took = admitted(cluster, probe, start)
    if paused is not None:
        with contextlib.suppress(Exception):  # the server may have ended it already
            paused.__exit__(RuntimeError, RuntimeError("rolled back"), None)
    if mode == "kill -9":
        leader.start()
    elif mode == "SIGSTOP":
        leader.kill(signal.SIGCONT)
    else:
        leader.link(up=True)
    for node in cluster.instances:
        node.wait_healthy()
    time.sleep(1.0)  # the old leader notices it lost the lease; heartbeats resume
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=21, help="faults in all (>= 20)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="in turn")
    parser.add_argument("--hold", choices=HOLDS, default="none", help="see the docstring")
    args = parser.parse_args()
    why = can_run()
    if why is not None:
        raise SystemExit(f"cannot run: {why}")
    # Not under a 0700 directory: tenant users must reach the shared lock dir.
    cluster = NetCluster(Path(tempfile.mkdtemp(prefix="vai-failover-")), node_lost_s=6.0)
    times: dict[str, list[float]] = {mode: [] for mode in args.modes}
    ids: list[int] = []
    stop = threading.Event()
    try:
        cluster.start()
        loader = threading.Thread(target=load, args=(cluster, ids, stop), daemon=True)
        loader.start()
        for i in range(args.kills):
            mode = args.modes[i % len(args.modes)]
            took = one_round(cluster, mode, args.hold)
            times[mode].append(took)
            print(f"fault {i + 1:2d} {mode:9s}: new leader admitted in {took:.2f}s", flush=True)
        stop.set()
        loader.join(10)
        done = cluster.wait(ids, timeout=120)
        lost = sum(1 for j in done.values() if j["state"] != "succeeded")
        if lost:
            print("not succeeded:", [(i, j["state"], j["reason"]) for i, j in done.items()][:5])
        duplicated = len(set(cluster.duplicates(ids)) | {int(i) for i in cluster.overlaps()})
    finally:
        stop.set()
        cluster.stop()
    every = [t for values in times.values() for t in values]
    for mode, values in times.items():
        print(
            f"{mode:9s}: n={len(values)} p50={statistics.median(values):.2f}s "
            f"max={max(values):.2f}s"
        )
    print(f"jobs submitted under load: {len(ids)} (pid {os.getpid()})")
    print(
        f"failover_s_p50={statistics.median(every):.2f} failover_s_max={max(every):.2f} "
        f"lost={lost} duplicated={duplicated}"
    )


if __name__ == "__main__":
    main()
