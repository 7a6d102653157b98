"""Benchmark of dispatching jobs to a Slurm site (``docs/benchmarks.md``, Sites).

Run (root): ``scripts/slurm-dev.sh start`` then ``.venv/bin/python bench/sites.py``
(``--help`` for sizes).  Both sides go over one reused SSH connection to the
cluster's login node, so what differs is only what virtuai adds:

- baseline ``sbatch``: ``sbatch --parsable --wrap true`` per job, one SSH channel
  each, sequentially;
- ``site dispatch``: ``SlurmSiteDriver.launch`` per job attempt, as the life-cycle
  loop calls it (the batch script with virtuai's options, its directories made);
  the one listing per process that makes resubmission safe is timed apart;
- both in 10 interleaved rounds, so that load from others slows both alike;
- latency: submit -> RUNNING as seen by polling ``squeue`` every 50 ms, for jobs
  one at a time on an idle cluster, both ways; the added latency is virtuai's
  minus plain sbatch's, at the median and the 99th percentile;
- one batched ``refresh`` (one squeue + one sacct) over all dispatched jobs.

The last line is ``site_dispatch_per_s=N sbatch_per_s=N added_latency_p50_ms=N
added_latency_p99_ms=N``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

from virtuai.domain.resources import Resources
from virtuai.drivers.base import TaskSpec
from virtuai.drivers.slurm.client import SlurmClient
from virtuai.drivers.slurm.driver import SiteConfig, SlurmSiteDriver
from virtuai.drivers.slurm.transport import SshTarget, SshTransport

DEV_DIR = Path("/tmp/virtuai-slurm-dev")


def spec(job: int, run: str) -> TaskSpec:
    return TaskSpec(
        job_id=f"{run}{job}",
        attempt=0,
        index=0,
        tenant="physics",
        command=("true",),
        env={"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "VIRTUAI_JOB_ID": str(job)},
        workdir=None,
        create_workdir=True,
        node="vsd:vsd-n1",
        resources=Resources(1000, 64 * 2**20, 0),
        gpu_indices=(),
        walltime_s=60,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_running(transport: SshTransport, slurm_id: str, started: float) -> float:
    while True:
        out = transport.run(f"squeue -h -j {slurm_id} -o %T").out.strip()
        if out in {"RUNNING", "COMPLETING", "COMPLETED", ""}:
            return time.perf_counter() - started
        time.sleep(0.05)


def wait_idle(transport: SshTransport) -> None:
    while transport.run("squeue -h --me -t PD,R,CG -o %i").out.strip():
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per rate measurement")
    parser.add_argument("--latency-jobs", type=int, default=20, help="jobs per latency sample")
    parser.add_argument("--dir", type=Path, default=DEV_DIR, help="slurm-dev.sh state dir")
    args = parser.parse_args()
    ssh = args.dir / "ssh"
    target = SshTarget.parse(
        "vsdlab@10.252.77.5", str(ssh / "id_ed25519"), (ssh / "known_hosts").read_text()
    )
    transport = SshTransport(target)
    run = uuid.uuid4().hex[:6]
    driver = SlurmSiteDriver(
        SiteConfig("vsd", run, "vsd:debug", "debug", {"physics": "physics"}),
        SlurmClient(transport, run),
    )
    transport.run("true")  # connect once, outside the measurements
    try:
        # Once per server process: the listing that makes resubmission safe (not timed).
        started = time.perf_counter()
        handles = [driver.launch(spec(0, "w"))]
        recovery_s = time.perf_counter() - started
        # Interleaved rounds, so that a machine shared with others slows both alike.
        sbatch_s = dispatch_s = 0.0
        rounds = 10
        per_round = max(1, args.jobs // rounds)
        for r in range(rounds):
            started = time.perf_counter()
            for _ in range(per_round):
                transport.run("sbatch --parsable -o /dev/null -t 1 --wrap true")
            sbatch_s += time.perf_counter() - started
            started = time.perf_counter()
            for i in range(per_round):
                handles.append(driver.launch(spec(r * per_round + i, "r")))
            dispatch_s += time.perf_counter() - started
        args.jobs = rounds * per_round
        started = time.perf_counter()
        driver.refresh(str(h["slurm_id"]) for h in handles)
        refresh_s = time.perf_counter() - started
        wait_idle(transport)

        plain: list[float] = []
        ours: list[float] = []
        for i in range(args.latency_jobs):
            t0 = time.perf_counter()
            out = transport.run("sbatch --parsable -o /dev/null -t 1 --wrap true").out
            plain.append(wait_running(transport, out.strip().split(";")[0], t0))
            t0 = time.perf_counter()
            handle = driver.launch(spec(i, "l"))
            ours.append(wait_running(transport, str(handle["slurm_id"]), t0))
        added = [(o - p) * 1000 for o, p in zip(ours, plain, strict=True)]
        wait_idle(transport)
    finally:
        transport.close()

    sbatch_rate = args.jobs / sbatch_s
    dispatch_rate = args.jobs / dispatch_s
    print(f"plain sbatch over SSH:        {sbatch_rate:8.1f} jobs/s  (baseline)")
    print(
        f"virtuai site dispatch:        {dispatch_rate:8.1f} jobs/s  "
        f"({dispatch_rate / sbatch_rate:.2f}x baseline)"
    )
    print(f"one batched refresh of {len(handles)}:  {refresh_s * 1000:8.1f} ms")
    print(f"recovery listing (once per process): {recovery_s * 1000:.0f} ms")
    print(
        f"submit->running, plain:       p50 {statistics.median(plain) * 1000:.0f} ms, "
        f"virtuai p50 {statistics.median(ours) * 1000:.0f} ms"
    )
    p50 = statistics.median(added)
    p99 = percentile(added, 0.99)
    print(
        f"site_dispatch_per_s={dispatch_rate:.1f} sbatch_per_s={sbatch_rate:.1f} "
        f"added_latency_p50_ms={p50:.0f} added_latency_p99_ms={p99:.0f}"
    )


if __name__ == "__main__":
    main()
