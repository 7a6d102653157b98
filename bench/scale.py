"""Benchmark: a server holding 100k jobs, 10k of them pending, under 200 clients.

Run: ``.venv/bin/python bench/scale.py [--stored 100000] [--pending 10000] [--clients 200]``.

Method, on a real ``virtuai up`` over SQLite:

1. Start the server; create a tenant with a quota of 1 CPU and a member; submit
   one ``sleep`` job that takes that CPU, so that every pending job waits for
   quota and each scheduling pass has to consider all of them.
2. Stop the server (the job keeps running under its supervisor) and add the
   stored jobs straight into the database with SQLAlchemy Core (finished jobs,
   then the pending ones), as a long-lived installation would hold them.
3. Start the server again: the time to ``/healthz`` is the restart time.
4. Idle: let it settle, then read its CPU time over ``--idle-s`` seconds
   (``/proc/PID/stat``); RSS from ``/proc/PID/status``.
5. Load: ``--clients`` threads, each with its own keep-alive connection, each
   sending one request every ``--pace-s`` seconds for ``--load-s`` seconds: a
   page of 50 jobs (60%), one job in detail (30%), a submit (10%).  Latency is
   measured per request, and reported for all and per kind; any status >= 500 counts
   as an error.

``--baseline-src DIR`` measures a server of another source tree too (``DIR`` is its
``src``, e.g. ``git archive main src | tar -x -C /tmp/base``), in turn with this one for
``--rounds`` rounds, and prints the ratios this / baseline (medians over the rounds).

``--api-workers N`` measures a server of this tree with ``server.api_workers: N`` too
(kind ``workersN``), in turn with the one of 1 process, and prints workersN / this;
its CPU and RSS are those of all its processes.

Last line: ``api_p99_ms=N rss_mb=N idle_cpu_pct=N`` (this tree; medians over the rounds).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import multiprocessing
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Http, VirtuaiServer, median, percentile
from sqlalchemy import insert, select

from virtuai.store.db import create_db_engine
from virtuai.store.models import JobRow, TenantRow, UserRow

BATCH = 5000


def seed(db: Path, stored: int, pending: int) -> None:
    engine = create_db_engine(f"sqlite:///{db}")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        tenant_id = conn.execute(select(TenantRow.id).where(TenantRow.name == "scale")).scalar_one()
        user_id = conn.execute(select(UserRow.id).where(UserRow.name == "scaler")).scalar_one()
    base: dict[str, Any] = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "name": "sweep",
        "kind": "job",
        "command": ["python", "train.py", "--lr", "0.1"],
        "env": {},
        "cpu_milli": 1000,
        "memory": 64 * 2**20,
        "gpu": 0,
        "tasks": 1,
        "walltime_s": 3600,
        "priority_class": "normal",
        # What the API gives a job of the class "normal" (settings' priority classes):
        # with 0, every job submitted during the load went ahead of the 10k stored
        # ones, and each pass moved all 10k one place back.
        "priority": 500,
        "placement": [],
        "dependencies": [],
        "checkpoint_signal": 15,
        "requeue": True,
        "attempt": 0,
        "restart_count": 0,
        "submitted_at": now,
        "updated_at": now,
    }
    finished = {
        **base,
        "state": "succeeded",
        "reason": "exited with code 0",
        "exit_code": 0,
        "started_at": now,
        "finished_at": now,
    }
    waiting = {**base, "state": "pending", "reason": "waiting for the scheduler"}
    with engine.begin() as conn:
        # Apart: a batch must not mix the two kinds' columns.
        for row, count in ((finished, stored - pending), (waiting, pending)):
            for start in range(0, count, BATCH):
                conn.execute(insert(JobRow), [row] * min(BATCH, count - start))
    engine.dispose()


Load = tuple[dict[str, list[float]], int, int]


def load(port: int, token: str, args: argparse.Namespace, top: int) -> Load:
    """Latencies per kind of request (``page``, ``job``, ``submit``), errors, requests.

    The clients are threads of ``--client-processes`` processes: 200 threads in one
    Python process wait for its GIL (and its collections) to read their answers, which
    adds the client's own delays to the tail measured."""
    parts = max(1, min(args.client_processes, args.clients))
    shares = [args.clients // parts + (i < args.clients % parts) for i in range(parts)]
    firsts = [sum(shares[:i]) for i in range(parts)]
    if parts == 1:
        return load_part(port, token, args, top, shares[0], 0)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(parts, mp_context=context) as pool:
        futures = [
            pool.submit(load_part, port, token, args, top, share, first)
            for share, first in zip(shares, firsts, strict=True)
        ]
        results = [future.result() for future in futures]
    latencies: dict[str, list[float]] = {"page": [], "job": [], "submit": []}
    for part, _, _ in results:
        for kind, values in part.items():
            latencies[kind] += values
    return latencies, sum(r[1] for r in results), sum(r[2] for r in results)


def load_part(
    port: int, token: str, args: argparse.Namespace, top: int, clients: int, first: int
) -> Load:
    """``clients`` client threads (seeds ``first``...) of one process."""
    latencies: dict[str, list[float]] = {"page": [], "job": [], "submit": []}
    errors = 0
    requests = 0
    lock = threading.Lock()
    deadline = time.monotonic() + args.load_s
    body = {"command": ["true"], "resources": {"cpu": 1, "memory": "64Mi"}}

    def client(seed_: int) -> None:
        nonlocal errors, requests
        rng = random.Random(seed_)
        http = Http(port, token)
        time.sleep(rng.random() * args.pace_s)  # spread the clients over the period
        mine: list[tuple[str, float]] = []
        bad = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            pick = rng.random()
            if pick < 0.6:
                kind = "page"
                status, _ = http.call("GET", "/api/v1/jobs?limit=50")
            elif pick < 0.9:
                kind = "job"
                status, _ = http.call("GET", f"/api/v1/jobs/{rng.randint(1, top)}")
            else:
                kind = "submit"
                status, _ = http.call("POST", "/api/v1/jobs", body)
            elapsed = time.perf_counter() - started
            mine.append((kind, elapsed))
            bad += status >= 500
            time.sleep(max(0.0, args.pace_s - elapsed))
        http.close()
        with lock:
            for kind, elapsed in mine:
                latencies[kind].append(elapsed)
            errors += bad
            requests += len(mine)

    threads = [threading.Thread(target=client, args=(first + i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the clients' threads over this many processes (see load())",
    )
    parser.add_argument("--pace-s", type=float, default=2.0)
    parser.add_argument("--load-s", type=float, default=20.0)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also measure a server of this source tree (its src), in turn with this one",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--api-workers", type=int, default=1)
    args = parser.parse_args()

    kinds = ["this"] + (["baseline"] if args.baseline_src is not None else [])
    workers = f"workers{args.api_workers}"
    envs: dict[str, dict[str, str]] = {"this": {}, "baseline": {}}
    if args.baseline_src is not None:
        envs["baseline"] = {"PYTHONPATH": str(args.baseline_src)}
    if args.api_workers > 1:
        kinds.append(workers)
        envs[workers] = {"VIRTUAI_SERVER__API_WORKERS": str(args.api_workers)}
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        # Alternate which goes first, so that neither always meets the same machine load.
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            print(f"-- round {round_ + 1}: {kind} server (load {os.getloadavg()})", flush=True)
            processes = args.api_workers if kind == workers else 1
            results[kind].append(measure(args, envs[kind], processes))
    if len(kinds) > 1:
        names = [
            "api_p50_ms",
            "api_p99_ms",
            "req_per_s",
            "cpu_ms_per_req",
            "rss_mb",
            "idle_cpu_pct",
        ]
        for kind in kinds:
            medians = {n: median([r[n] for r in results[kind]]) for n in names}
            print(f"{kind}: " + " ".join(f"{n}={v:.1f}" for n, v in medians.items()))
        for other in kinds[1:]:
            # this/baseline as before; workersN/this: what N processes change.
            a, b = ("this", other) if other == "baseline" else (other, "this")
            ratios = {
                n: median([r[n] for r in results[a]]) / median([r[n] for r in results[b]])
                for n in names
            }
            print(f"ratio {a}/{b}: " + " ".join(f"{n}={r:.2f}" for n, r in ratios.items()))
    this = results["this"]
    p99 = median([r["api_p99_ms"] for r in this])
    rss = median([r["rss_mb"] for r in this])
    idle = median([r["idle_cpu_pct"] for r in this])
    print(f"api_p99_ms={p99:.0f} rss_mb={rss:.0f} idle_cpu_pct={idle:.1f}")


def measure(args: argparse.Namespace, env: dict[str, str], processes: int) -> dict[str, float]:
    server = VirtuaiServer(env)
    holder: dict[str, Any] = {}
    token = ""
    try:
        server.start()
        admin = server.http()
        admin.ok("POST", "/api/v1/tenants", {"name": "scale", "quota": {"cpu": 1}})
        token = admin.ok("POST", "/api/v1/users", {"name": "scaler", "tenant": "scale"})["token"]
        http = server.http(token)
        holder = http.ok(
            "POST",
            "/api/v1/jobs",
            {"command": ["sleep", "3600"], "resources": {"cpu": 1, "memory": "16Mi"}},
        )
        while http.ok("GET", f"/api/v1/jobs/{holder['id']}")["state"] != "running":
            time.sleep(0.1)
        http.close()
        admin.close()
        server.kill(15)

        started = time.perf_counter()
        seed(server.home / "virtuai.db", args.stored, args.pending)
        print(f"seeded {args.stored} jobs in {time.perf_counter() - started:.1f} s", flush=True)

        restart_s = server.start()
        print(f"restart to /healthz with {args.stored} jobs: {restart_s:.2f} s", flush=True)
        server.wait_workers(processes)
        time.sleep(10)  # the first passes give every pending job its reason
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(args.idle_s)
        idle_pct = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        rss = server.rss_mb()
        print(f"idle with {args.pending} pending: {idle_pct:.1f}% of a CPU, RSS {rss:.0f} MB")

        load_avg = os.getloadavg()[0]
        cpu0 = server.cpu_seconds()
        by_kind, errors, requests = load(server.port, token, args, args.stored)
        latencies = [x for values in by_kind.values() for x in values]
        # The server's CPU per request: what a loaded machine's queueing does not change much.
        cpu_ms = 1000 * (server.cpu_seconds() - cpu0) / max(1, requests)
        rss = max(rss, server.rss_mb())
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        print(
            f"{args.clients} clients, one request per {args.pace_s:g} s each: {requests} requests, "
            f"{requests / args.load_s:.0f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"{errors} errors (>= 500); server CPU {cpu_ms:.1f} ms per request; "
            f"load average {load_avg:.1f} -> {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        print(
            "  p50 / p99 by kind: "
            + ", ".join(
                f"{kind} {percentile(v, 50) * 1000:.0f} / {percentile(v, 99) * 1000:.0f} ms"
                for kind, v in by_kind.items()
                if v
            ),
            flush=True,
        )
        return {
            "api_p50_ms": p50,
            "api_p99_ms": p99,
            "req_per_s": requests / args.load_s,
            "cpu_ms_per_req": cpu_ms,
            "rss_mb": rss,
            "idle_cpu_pct": idle_pct,
        }
    finally:
        if holder and server.process is not None and server.process.poll() is None:
            # Its supervisor outlives the server: end the job before leaving.
            server.http(token).call("POST", f"/api/v1/jobs/{holder['id']}/cancel")
            time.sleep(2)
        server.stop()


if __name__ == "__main__":
    main()
