"""Benchmark: the CPU of one scheduling pass with a large queue, idle and after a burst.

Run: ``.venv/bin/python bench/scheduling_pass.py [--pending 10000] [--burst 20]
[--baseline-src DIR]``.

In process, on a real SQLite database migrated by the code under test: one tenant with a
1-CPU quota held by a running job, ``--pending`` jobs waiting for quota (as in
``bench/scale.py``), then ``--rounds`` times: ``--burst`` submits (one transaction each,
as the API writes them) followed by one ``SchedulingLoop.tick()``, and one idle tick.
The CPU time (``time.process_time``) of each tick is measured; the first pass, which
reads everything, is reported apart.  ``--baseline-src DIR`` runs the same in a process
of another source tree (``DIR`` is its ``src``) in turn with this one, and prints the
ratios this / baseline.

Last line: ``burst_pass_ms=N idle_tick_ms=N first_pass_ms=N`` (this tree, medians).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ["first_pass_ms", "burst_pass_ms", "idle_tick_ms"]


def measure(pending: int, burst: int, rounds: int) -> dict[str, float]:
    from sqlalchemy import insert, select

    from virtuai.control.scheduling import SchedulingLoop
    from virtuai.domain.clock import SystemClock
    from virtuai.scheduler.snapshot import Policy
    from virtuai.store.db import create_db_engine, make_session_factory, transaction
    from virtuai.store.migrate import migrate
    from virtuai.store.models import JobRow, NodeRow, TenantQuotaRow, TenantRow, UserRow

    home = Path(tempfile.mkdtemp(prefix="vai-pass-"))
    engine = create_db_engine(f"sqlite:///{home}/virtuai.db")
    migrate(engine)
    sessions = make_session_factory(engine)
    now = dt.datetime.now(dt.UTC)
    with transaction(sessions) as session:
        tenant = TenantRow(name="scale", weight=1.0, created_at=now)
        session.add(tenant)
        session.add(UserRow(name="scaler", created_at=now))
        session.add(
            NodeRow(
                name="n1", site="local", pool="default", cpu_milli=2000, memory=2**33,
                updated_at=now,
            )
        )  # fmt: skip
        session.flush()
        session.add(TenantQuotaRow(tenant_id=tenant.id, pool="*", nominal_cpu_milli=1000))
    with engine.begin() as conn:
        tenant_id = conn.execute(select(TenantRow.id)).scalar_one()
        user_id = conn.execute(select(UserRow.id)).scalar_one()
    base: dict[str, Any] = {
        "tenant_id": tenant_id, "user_id": user_id, "name": "sweep", "kind": "job",
        "command": ["python", "train.py"], "env": {}, "cpu_milli": 1000, "memory": 2**26,
        "gpu": 0, "tasks": 1, "walltime_s": 3600, "priority_class": "normal", "priority": 0,
        "placement": [], "dependencies": [], "checkpoint_signal": 15, "requeue": True,
        "attempt": 0, "restart_count": 0, "submitted_at": now, "updated_at": now,
        "state": "pending", "reason": "waiting for the scheduler",
    }  # fmt: skip
    holder = {
        **base,
        "state": "running",
        "started_at": now,
        "admitted_at": now,
        "placement": [
            {"index": 0, "node": "n1", "cpu_milli": 1000, "memory": 2**26, "gpu": 0,
             "gpu_indices": []}
        ],
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(JobRow), [holder])
        for start in range(0, pending, 5000):
            conn.execute(insert(JobRow), [base] * min(5000, pending - start))
    loop = SchedulingLoop(sessions, SystemClock(), Policy(fair_share=True, backfill=True))

    def timed_tick() -> float:
        started = time.process_time()
        loop.tick()
        return (time.process_time() - started) * 1000

    first = timed_tick()
    timed_tick()  # the reasons the first pass wrote
    bursts, idles = [], []
    for _ in range(rounds):
        for _ in range(burst):
            with transaction(sessions) as session:
                session.add(JobRow(**{**base, "submitted_at": dt.datetime.now(dt.UTC)}))
        bursts.append(timed_tick())
        idles.append(timed_tick())
    engine.dispose()
    return {
        "first_pass_ms": first,
        "burst_pass_ms": statistics.median(bursts),
        "idle_tick_ms": statistics.median(idles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--turns", type=int, default=3, help="runs of each tree, in turn")
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.pending, args.burst, args.rounds)))
        return
    kinds = ["this"] + (["baseline"] if args.baseline_src is not None else [])
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for turn in range(args.turns):
        for kind in kinds if turn % 2 == 0 else kinds[::-1]:
            env = dict(os.environ)
            if kind == "baseline":
                env["PYTHONPATH"] = str(args.baseline_src)
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--pending", str(args.pending),
                 "--burst", str(args.burst), "--rounds", str(args.rounds)],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            result = json.loads(out.strip().splitlines()[-1])
            load = os.getloadavg()[0]
            print(
                f"{kind}: " + " ".join(f"{n}={result[n]:.1f}" for n in NAMES) + f" load={load:.1f}"
            )
            results[kind].append(result)
    medians = {
        kind: {n: statistics.median(r[n] for r in results[kind]) for n in NAMES} for kind in kinds
    }
    if args.baseline_src is not None:
        ratios = {n: medians["this"][n] / max(medians["baseline"][n], 1e-9) for n in NAMES}
        print("ratio this/baseline: " + " ".join(f"{n}={r:.3f}" for n, r in ratios.items()))
    this = medians["this"]
    print(
        " ".join(f"{n}={this[n]:.1f}" for n in ["burst_pass_ms", "idle_tick_ms", "first_pass_ms"])
    )


if __name__ == "__main__":
    main()
