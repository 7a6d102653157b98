"""Benchmark: ``POST /api/v1/jobs`` alone, this tree against a baseline, interleaved.

``.venv/bin/python bench/api_submit.py [--rounds 3] [--baseline-src DIR]``

The submit part of ``bench/throughput.py`` without Slurm (no root, no Slurm dev
cluster): a real ``virtuai up`` (SQLite, local driver) per source tree, the same
held jobs (``afterok`` on a job that sleeps), one client in sequence and then 16
clients at once over keep-alive HTTP.  With ``--baseline-src`` (a ``src`` folder,
e.g. ``git archive main src | tar -x -C /tmp/base``) a second server of that tree
is measured round by round beside this one, and the ratios this / baseline are
printed.  Compare with ``sbatch`` through ``bench/throughput.py`` (which needs the
Slurm dev cluster), or with its figures recorded in ``docs/benchmarks.md``.

Last line::

    api_seq_per_s=N api_seq_p99_ms=N api_x16_per_s=N api_x16_p99_ms=N \
cpu_ms_per_seq_submit=N cpu_ms_per_x16_submit=N

``--api-workers N`` measures a second server of this tree with ``server.api_workers: N``
beside the one with 1 (kind ``workersN``), round by round; ``--postgres`` puts every
server on a PostgreSQL of its own database (started as the tests start one,
``tests/support/postgres.py``) instead of SQLite.

(the server's CPU time per submit, all its threads: a figure that the machine's
other load changes little, unlike the rates).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import VirtuaiServer, median, percentile
from throughput import CONCURRENT_CLIENTS, PER_CLIENT, SEQUENTIAL, api_submits, in_parallel, rate

IDLE_S = 3.0


def blocker_of(server: VirtuaiServer, token: str) -> int:
    http = server.http(token)
    body = {"command": ["sleep", "3600"], "resources": {"cpu": 0.1, "memory": "16Mi"}}
    blocker: int = http.ok("POST", "/api/v1/jobs", body)["id"]
    http.close()
    return blocker


def measure(server: VirtuaiServer, token: str, blocker: int) -> dict[str, float]:
    # What the server spends doing nothing (its loops' ticks, the drivers' watches), per
    # second: taken off the CPU per submit below, which would otherwise count it.
    cpu, idle_started = server.cpu_seconds(), time.perf_counter()
    time.sleep(IDLE_S)
    idle = (server.cpu_seconds() - cpu) / (time.perf_counter() - idle_started)
    cpu = server.cpu_seconds()
    started = time.perf_counter()
    latencies = api_submits(server, token, blocker, SEQUENTIAL)
    seq_s = time.perf_counter() - started
    seq_cpu, cpu = server.cpu_seconds() - cpu, server.cpu_seconds()
    wall, many = in_parallel(
        CONCURRENT_CLIENTS, lambda _i: api_submits(server, token, blocker, PER_CLIENT)
    )
    x16_cpu = server.cpu_seconds() - cpu
    return {
        # The server's CPU time per submit (every thread, the loops' included, the idle
        # server's own taken off): unlike the rates, it hardly depends on what else the
        # machine runs.
        "idle_cpu_pct": idle * 100,
        "cpu_ms_per_seq_submit": (seq_cpu - idle * seq_s) / SEQUENTIAL * 1000,
        "cpu_ms_per_x16_submit": (x16_cpu - idle * wall) / (CONCURRENT_CLIENTS * PER_CLIENT) * 1000,
        "api_seq_per_s": rate(SEQUENTIAL, seq_s),
        "api_seq_p50_ms": percentile(latencies, 50) * 1000,
        "api_seq_p99_ms": percentile(latencies, 99) * 1000,
        "api_x16_per_s": rate(CONCURRENT_CLIENTS * PER_CLIENT, wall),
        "api_x16_p50_ms": percentile(many, 50) * 1000,
        "api_x16_p99_ms": percentile(many, 99) * 1000,
    }


@contextmanager
def databases(postgres: bool) -> Iterator[Iterator[dict[str, str]]]:
    """Each server's database settings: SQLite in its home, or a fresh PostgreSQL database."""
    if not postgres:
        yield iter(lambda: {}, None)
        return
    # By its path: tests/support has a platform.py, which must not shadow the standard one.
    path = Path(__file__).resolve().parent.parent / "tests" / "support" / "postgres.py"
    spec = importlib.util.spec_from_file_location("virtuai_test_postgres", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    fresh_database, postgres_session_url = module.fresh_database, module.postgres_session_url

    with ExitStack() as stack:
        server = stack.enter_context(postgres_session_url())

        def fresh() -> Iterator[dict[str, str]]:
            while True:
                yield {"VIRTUAI_DATABASE_URL": stack.enter_context(fresh_database(server))}

        yield fresh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument(
        "--baseline-workers",
        type=int,
        default=1,
        help="the baseline server's server.api_workers (a change to the workers themselves)",
    )
    args = parser.parse_args()
    with databases(args.postgres) as envs:
        run(args, envs)


def run(args: argparse.Namespace, envs: Iterator[dict[str, str]]) -> None:
    kinds = ["this"] + (["baseline"] if args.baseline_src is not None else [])
    servers = {"this": VirtuaiServer(next(envs))}
    if args.baseline_src is not None:
        baseline = {"PYTHONPATH": str(args.baseline_src.resolve())}
        if args.baseline_workers > 1:
            baseline["VIRTUAI_SERVER__API_WORKERS"] = str(args.baseline_workers)
        servers["baseline"] = VirtuaiServer(next(envs) | baseline)
    workers = f"workers{args.api_workers}"
    if args.api_workers > 1:
        kinds.append(workers)
        many = {"VIRTUAI_SERVER__API_WORKERS": str(args.api_workers)}
        servers[workers] = VirtuaiServer(next(envs) | many)
    results: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    try:
        tokens, blockers = {}, {}
        for kind in kinds:
            servers[kind].start()
            wanted = {workers: args.api_workers, "baseline": args.baseline_workers}
            servers[kind].wait_workers(wanted.get(kind, 1))
            tokens[kind] = servers[kind].setup_user()
            blockers[kind] = blocker_of(servers[kind], tokens[kind])
        time.sleep(1)  # the blockers started
        for round_ in range(args.rounds):
            # Alternate the order, so that no kind always meets the same machine load.
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                got = measure(servers[kind], tokens[kind], blockers[kind])
                for name, value in got.items():
                    results[kind].setdefault(name, []).append(value)
                line = " ".join(f"{k}={v:.3g}" for k, v in got.items())
                load = os.getloadavg()[0]
                print(f"round {round_ + 1} {kind}: {line} load1={load:.2f}", flush=True)
        names = list(results["this"])
        for kind in kinds:
            print(f"{kind}: " + " ".join(f"{n}={median(results[kind][n]):.3g}" for n in names))
        for other in kinds[1:]:
            # this/baseline as before; workersN/this: what N processes change.
            a, b = ("this", other) if other == "baseline" else (other, "this")
            ratios = {n: median(results[a][n]) / median(results[b][n]) for n in names}
            print(f"ratio {a}/{b}: " + " ".join(f"{n}={r:.2f}" for n, r in ratios.items()))
        last = (
            "api_seq_per_s", "api_seq_p99_ms", "api_x16_per_s", "api_x16_p99_ms",
            "cpu_ms_per_seq_submit", "cpu_ms_per_x16_submit",
        )  # fmt: skip
        print(" ".join(f"{n}={median(results['this'][n]):.3g}" for n in last))
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
