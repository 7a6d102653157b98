"""Benchmark: submit throughput, CLI cost and end-to-end job rate, virtuai beside a real Slurm.

Run as root (Slurm's daemons): ``.venv/bin/python bench/throughput.py [--rounds 3]``.

A real single-node Slurm 22.05 (Debian's slurm-wlm and munge, brought up by
``scripts/slurm-dev.sh start --single`` in its own state directory and ports)
and a real ``virtuai up`` (SQLite, local driver) run side by side on this
machine; the measurements alternate between them, round after round, so that
both see the same machine load.  Medians over the rounds are reported.

- **Submits.** ``api``: ``POST /api/v1/jobs`` over keep-alive HTTP, one client
  in sequence, then 16 clients at once; ``sbatch``: the command, in sequence and
  16 at once.  The jobs submitted here are held (virtuai: ``afterok`` on a job
  that sleeps; Slurm: ``--hold``), so the rates measure submission, not the
  machine running ``true`` hundreds of times; they still sit in the queues.
- **CLI.** Wall time of one ``virtuai submit`` process (the console script)
  and of one ``sbatch``, median of 30.
- **End to end.** 200 ``true`` jobs of 0.1 CPU (up to 20 at once), then 100 of
  1 CPU (2 at once on 2 cores), submitted at once; jobs/s from the first submit
  to the last job's end.  Slurm: 100 ``sbatch --wrap true`` (1 CPU each).
- **Latency.** Submit -> running of 20 jobs submitted one at a time on an idle
  server (from the job's own timestamps), and restart to ``/healthz`` after
  ``kill -9``.

The last line is machine-readable::

    api_submit_per_s=N sbatch_per_s=N api_ratio=R cli_submit_ms=N sbatch_ms=N \
e2e_jobs_per_s=N e2e_1cpu_jobs_per_s=N slurm_e2e_jobs_per_s=N

(``api_submit_per_s`` and ``sbatch_per_s`` are the sequential rates; the ratio is
the smaller of the sequential and 16-client ratios).

``--api-workers N`` adds a second ``virtuai up`` with ``server.api_workers: N`` whose
submits are measured in every round beside the first's (one process) and Slurm's; the
last line then ends with ``api_workers_ratio=R`` (the same min of both ratios to sbatch,
for the server of N processes).

``--no-slurm`` runs virtuai's end-to-end, latency and restart parts alone (no root,
no Slurm: for a machine whose one Slurm dev cluster is in use), ``--rounds`` times;
``--baseline-src DIR`` adds a server of another source tree (``DIR`` is its ``src``
folder, e.g. ``git archive <commit> src | tar -x -C /tmp/base``), measured
interleaved with this one, and prints the ratios this / baseline.  Its last line::

    e2e_jobs_per_s=N e2e_1cpu_jobs_per_s=N submit_running_p50_s=X \
submit_running_p99_s=X restart_healthz_s=X restart_ready_s=X
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Http, VirtuaiServer, median, percentile

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = 200
CONCURRENT_CLIENTS = 16
PER_CLIENT = 25
CLI_CALLS = 30
E2E_JOBS = 200
E2E_1CPU_JOBS = 100
SLURM_E2E_JOBS = 100


class Slurm:
    """``scripts/slurm-dev.sh start --single`` in a private state directory and ports."""

    def __init__(self) -> None:
        script = os.environ.get("VIRTUAI_SLURM_DEV_SCRIPT") or str(ROOT / "scripts/slurm-dev.sh")
        if not Path(script).exists():
            raise SystemExit(f"{script} is missing: it brings up the real Slurm to compare with")
        self.script = script
        self.dir = Path(tempfile.mkdtemp(prefix="vai-bench-slurm-"))
        base = 20000 + os.getpid() % 20000
        self.env = {
            **os.environ,
            "VIRTUAI_SLURM_DEV_DIR": str(self.dir),
            "VSD_DB_PORT": str(base),
            "VSD_DBD_PORT": str(base + 1),
            "VSD_CTLD_PORT": str(base + 2),
            "VSD_SLURMD_PORT": str(base + 3),
            "VSD_SSH_PORT": str(base + 4),
            "SLURM_CONF": str(self.dir / "etc/slurm.conf"),
        }

    def start(self) -> None:
        for attempt in (1, 2):  # a daemon slow to come up on a busy machine: once more
            done = subprocess.run(
                [self.script, "start", "--single"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode == 0:
                return
            print(f"slurm-dev.sh start failed ({attempt}): {done.stderr[-2000:]}", flush=True)
            subprocess.run([self.script, "stop"], env=self.env, capture_output=True, check=False)
        raise SystemExit("could not start Slurm")

    def stop(self) -> None:
        subprocess.run([self.script, "stop"], env=self.env, check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def sbatch(self, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            ["sbatch", "--parsable", "-o", "/dev/null", "-e", "/dev/null", *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    def cancel_all(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, check=False)
        self.wait_empty(120)

    def queued(self) -> int:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True, check=True
        ).stdout
        return len(out.split())

    def wait_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.2)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def in_parallel(clients: int, work: Callable[[int], list[float]]) -> tuple[float, list[float]]:
    """Run ``work(i)`` in ``clients`` threads; (wall seconds, every latency)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        mine = work(i)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


# virtuai ---------------------------------------------------------------------------------


def held_body(blocker: int) -> dict[str, Any]:
    return {
        "command": ["true"],
        "resources": {"cpu": 0.1, "memory": "16Mi"},
        "dependency": f"afterok:{blocker}",
    }


def api_submits(server: VirtuaiServer, token: str, blocker: int, count: int) -> list[float]:
    http = server.http(token)
    body = held_body(blocker)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        http.ok("POST", "/api/v1/jobs", body)
        latencies.append(time.perf_counter() - started)
    http.close()
    return latencies


def finished_count(http: Http, ids: set[int]) -> int:
    # Ours are the newest jobs: one page of exactly that many (a bigger list every poll
    # would load the server more than the jobs do).
    jobs = http.ok("GET", f"/api/v1/jobs?limit={len(ids)}")
    done = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}
    return sum(1 for j in jobs if j["id"] in ids and j["state"] in done)


def e2e(server: VirtuaiServer, token: str, count: int, cpu: float) -> float:
    http = server.http(token)
    body = {"command": ["true"], "resources": {"cpu": cpu, "memory": "16Mi"}}
    started = time.perf_counter()
    ids = {http.ok("POST", "/api/v1/jobs", body)["id"] for _ in range(count)}
    while finished_count(http, ids) < count:
        if time.perf_counter() - started > 600:
            raise RuntimeError("end-to-end run did not finish in 10 minutes")
        time.sleep(0.25)
    elapsed = time.perf_counter() - started
    http.close()
    return rate(count, elapsed)


def submit_to_running(server: VirtuaiServer, token: str, count: int) -> list[float]:
    """One job at a time on an idle server: started_at - submitted_at, from the API."""
    http = server.http(token)
    body = {"command": ["true"], "resources": {"cpu": 0.1, "memory": "16Mi"}}
    out = []
    for _ in range(count):
        job = http.ok("POST", "/api/v1/jobs", body)
        while True:
            seen = http.ok("GET", f"/api/v1/jobs/{job['id']}")
            if seen["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        first_running = next(e["at"] for e in seen["events"] if e["to_state"] == "running")
        out.append(_seconds_between(seen["submitted_at"], first_running))
    http.close()
    return out


def _seconds_between(a: str, b: str) -> float:
    return (dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds()


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_submit_ms(server: VirtuaiServer, token: str, blocker: int) -> tuple[float, float]:
    """Median wall time of one ``virtuai submit`` process, and its mean CPU time (ms).

    The package is byte-compiled first, as ``pip install`` leaves it: with
    ``PYTHONDONTWRITEBYTECODE`` set, an editable install would compile the CLI's
    modules again at every call (about 5 ms of each).
    """
    import compileall

    import virtuai

    compileall.compile_dir(str(Path(virtuai.__file__).parent), quiet=1)
    env = {**server.env, "VIRTUAI_URL": server.url, "VIRTUAI_TOKEN": token}
    cli = str(Path(sys.executable).parent / "virtuai")
    held = ["-d", f"afterok:{blocker}"]
    times = []
    cpu0 = child_cpu_s()
    for _ in range(CLI_CALLS):
        started = time.perf_counter()
        subprocess.run(
            [cli, "submit", "--cpu", "0.1", "--memory", "16Mi", *held, "--", "true"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - started)
    return median(times) * 1000, (child_cpu_s() - cpu0) / CLI_CALLS * 1000


def sbatch_ms(slurm: Slurm) -> tuple[float, float]:
    cpu0 = child_cpu_s()
    times = [slurm.sbatch("--hold", "--wrap", "true") for _ in range(CLI_CALLS)]
    return median(times) * 1000, (child_cpu_s() - cpu0) / CLI_CALLS * 1000


def restart_to_healthz(server: VirtuaiServer) -> float:
    server.kill()
    return server.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-slurm",
        action="store_true",
        help="virtuai's half only (end to end, latency, restart), for a machine whose one "
        "Slurm dev cluster is in use; the last line then has only virtuai's figures",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="with --no-slurm: also run a server from this source tree (its src/ folder, "
        "e.g. from `git archive`), interleaved, and print the ratios",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="also measure the submits of a server with server.api_workers: N, interleaved",
    )
    args = parser.parse_args()
    if args.no_slurm:
        virtuai_only(args.baseline_src, args.rounds)
        return

    slurm = Slurm()
    server = VirtuaiServer()
    many = VirtuaiServer({"VIRTUAI_SERVER__API_WORKERS": str(args.api_workers)})
    try:
        slurm.start()
        server.start()
        token = server.setup_user()
        blocker_http = server.http(token)
        blocker = blocker_http.ok(
            "POST",
            "/api/v1/jobs",
            {"command": ["sleep", "3600"], "resources": {"cpu": 0.1, "memory": "16Mi"}},
        )["id"]
        many_seq: list[float] = []
        many_conc: list[float] = []
        if args.api_workers > 1:
            many.start()
            many.wait_workers(args.api_workers)
            many_token = many.setup_user()
            many_blocker = many.http(many_token).ok(
                "POST",
                "/api/v1/jobs",
                {"command": ["sleep", "3600"], "resources": {"cpu": 0.1, "memory": "16Mi"}},
            )["id"]

        api_seq, sb_seq, api_conc, sb_conc = [], [], [], []
        api_lat: list[float] = []
        for round_ in range(args.rounds):
            latencies = api_submits(server, token, blocker, SEQUENTIAL)
            api_seq.append(rate(SEQUENTIAL, sum(latencies)))
            api_lat += latencies
            started = time.perf_counter()
            for _ in range(SEQUENTIAL):
                slurm.sbatch("--hold", "--wrap", "true")
            sb_seq.append(rate(SEQUENTIAL, time.perf_counter() - started))
            wall, latencies = in_parallel(
                CONCURRENT_CLIENTS, lambda _i: api_submits(server, token, blocker, PER_CLIENT)
            )
            api_conc.append(rate(CONCURRENT_CLIENTS * PER_CLIENT, wall))
            api_lat += latencies
            wall, _ = in_parallel(
                CONCURRENT_CLIENTS,
                lambda _i: [slurm.sbatch("--hold", "--wrap", "true") for _ in range(PER_CLIENT)],
            )
            sb_conc.append(rate(CONCURRENT_CLIENTS * PER_CLIENT, wall))
            if args.api_workers > 1:
                latencies = api_submits(many, many_token, many_blocker, SEQUENTIAL)
                many_seq.append(rate(SEQUENTIAL, sum(latencies)))
                wall, _ = in_parallel(
                    CONCURRENT_CLIENTS,
                    lambda _i: api_submits(many, many_token, many_blocker, PER_CLIENT),
                )
                many_conc.append(rate(CONCURRENT_CLIENTS * PER_CLIENT, wall))
                print(
                    f"round {round_ + 1}: api with {args.api_workers} processes "
                    f"{many_seq[-1]:.0f}/s seq, {many_conc[-1]:.0f}/s x16",
                    flush=True,
                )
            print(
                f"round {round_ + 1}: api {api_seq[-1]:.0f}/s seq, {api_conc[-1]:.0f}/s x16; "
                f"sbatch {sb_seq[-1]:.0f}/s seq, {sb_conc[-1]:.0f}/s x16",
                flush=True,
            )

        cli_ms, cli_cpu_ms = cli_submit_ms(server, token, blocker)
        sb_ms, sb_cpu_ms = sbatch_ms(slurm)
        print(
            f"cli: virtuai submit {cli_ms:.1f} ms wall, {cli_cpu_ms:.1f} ms CPU; "
            f"sbatch {sb_ms:.1f} ms wall, {sb_cpu_ms:.1f} ms CPU",
            flush=True,
        )

        # End to end: empty both queues of the held jobs first.
        blocker_http.ok("POST", f"/api/v1/jobs/{blocker}/cancel")
        slurm.cancel_all()
        time.sleep(3)
        e2e_rate = e2e(server, token, E2E_JOBS, 0.1)
        e2e_1cpu = e2e(server, token, E2E_1CPU_JOBS, 1.0)
        started = time.perf_counter()
        for _ in range(SLURM_E2E_JOBS):
            slurm.sbatch("-c", "1", "--mem", "16M", "--wrap", "true")
        slurm.wait_empty(900)
        slurm_e2e = rate(SLURM_E2E_JOBS, time.perf_counter() - started)
        print(
            f"e2e: {e2e_rate:.1f} jobs/s (0.1 CPU), {e2e_1cpu:.1f} jobs/s (1 CPU); "
            f"slurm {slurm_e2e:.2f} jobs/s",
            flush=True,
        )
        latencies = submit_to_running(server, token, 20)
        print(
            f"submit->running on an idle server: p50 {percentile(latencies, 50):.3f} s, "
            f"p99 {percentile(latencies, 99):.3f} s",
            flush=True,
        )
        restarts = [restart_to_healthz(server) for _ in range(5)]
        print(f"restart to /healthz: median {median(restarts):.2f} s, max {max(restarts):.2f} s")
        print(
            f"api submit latency: p50 {percentile(api_lat, 50) * 1000:.1f} ms, "
            f"p99 {percentile(api_lat, 99) * 1000:.1f} ms; "
            f"x16: api {median(api_conc):.0f}/s, sbatch {median(sb_conc):.0f}/s"
        )
        ratio = min(median(api_seq) / median(sb_seq), median(api_conc) / median(sb_conc))
        extra = ""
        if args.api_workers > 1:
            many_ratio = min(median(many_seq) / median(sb_seq), median(many_conc) / median(sb_conc))
            extra = f" api_workers_ratio={many_ratio:.2f}"
        print(
            f"api_submit_per_s={median(api_seq):.0f} sbatch_per_s={median(sb_seq):.0f} "
            f"api_ratio={ratio:.2f} cli_submit_ms={cli_ms:.0f} sbatch_ms={sb_ms:.0f} "
            f"e2e_jobs_per_s={e2e_rate:.1f} e2e_1cpu_jobs_per_s={e2e_1cpu:.1f} "
            f"slurm_e2e_jobs_per_s={slurm_e2e:.2f}{extra}"
        )
    finally:
        many.stop()
        server.stop()
        slurm.stop()


def virtuai_only(baseline_src: Path | None, rounds: int) -> None:
    """``--no-slurm``: the end-to-end, latency and restart parts on idle servers; with
    ``--baseline-src``, the same on a server of that source tree, interleaved round by
    round, and the ratios (this tree / baseline) measured in the same run."""
    kinds = ["this"] + (["baseline"] if baseline_src is not None else [])
    servers = {"this": VirtuaiServer()}
    if baseline_src is not None:
        servers["baseline"] = VirtuaiServer({"PYTHONPATH": str(baseline_src)})
    results: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}

    def note(kind: str, name: str, value: float) -> None:
        results[kind].setdefault(name, []).append(value)

    try:
        tokens = {}
        for kind in kinds:
            servers[kind].start()
            tokens[kind] = servers[kind].setup_user()
        for round_ in range(rounds):
            for kind in kinds:
                server, token = servers[kind], tokens[kind]
                note(kind, "e2e_jobs_per_s", e2e(server, token, E2E_JOBS, 0.1))
                note(kind, "e2e_1cpu_jobs_per_s", e2e(server, token, E2E_1CPU_JOBS, 1.0))
                latencies = submit_to_running(server, token, 20)
                note(kind, "submit_running_p50_s", percentile(latencies, 50))
                note(kind, "submit_running_p99_s", percentile(latencies, 99))
                for _ in range(3):
                    note(kind, "restart_healthz_s", restart_to_healthz(server))
                    note(kind, "restart_ready_s", server.ready_s)
                line = " ".join(f"{k}={v[-1]:.3g}" for k, v in results[kind].items())
                print(f"round {round_ + 1} {kind}: {line}", flush=True)
        names = list(results["this"])
        for kind in kinds:
            print(f"{kind}: " + " ".join(f"{n}={median(results[kind][n]):.3g}" for n in names))
        if baseline_src is not None:
            ratios = {n: median(results["this"][n]) / median(results["baseline"][n]) for n in names}
            print("ratio this/baseline: " + " ".join(f"{n}={r:.2f}" for n, r in ratios.items()))
        print(" ".join(f"{n}={median(results['this'][n]):.3g}" for n in names))
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
