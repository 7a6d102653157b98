"""Benchmark of the trace simulator (``docs/benchmarks.md``, Simulator).

Run: ``.venv/bin/python bench/sim.py`` (``--help`` for sizes; ``--quick`` for a
10,000-job smoke run).

A synthetic trace (``virtuai.sim.generate``: bursts of jobs from 4 tenants with
GPU-heavy, mixed, CPU and small-GPU profiles, log-normal durations, 5% of jobs
over their walltime) is replayed on a synthetic cluster (a quarter of the nodes
with 8 GPUs) under each policy, timing ``simulate()`` only: no isolated
replays, metrics or plots.

Reported per run: events (distinct event times), scheduling passes, passes the
free-room test skipped, wall time, jobs/s and milliseconds per pass.  Two
baselines give ratios:

- the same trace under FIFO (the first policy) vs the others;
- ``--baseline-jobs`` jobs on ``--baseline-nodes`` nodes (default 10,000 on 100),
  to show how the cost grows with the cluster.

``--tick 60`` schedules once a minute instead of at every event (``virtuai sim --tick``).

The last line is ``jobs_per_s=<N> wall_s=<W>``: the slowest policy on the big trace.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

from virtuai.sim.engine import simulate
from virtuai.sim.generate import generate_cluster, generate_trace
from virtuai.sim.metrics import summarize
from virtuai.sim.policy import EXAMPLE_POLICIES, example_policy


@dataclass(frozen=True)
class Result:
    label: str
    policy: str
    jobs: int
    nodes: int
    events: int
    passes: int
    skipped: int
    wall_s: float
    wait_mean_s: float
    gpu_utilization: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s

    @property
    def ms_per_pass(self) -> float:
        return 1000 * self.wall_s / max(1, self.passes)


def measure(
    label: str, jobs: int, nodes: int, load: float, seed: int, policy: str, tick_s: float
) -> Result:
    cluster = generate_cluster(nodes, 4)
    trace = generate_trace(cluster, jobs, seed=seed, load=load)
    began = time.perf_counter()
    run = simulate(trace, cluster, example_policy(policy), tick_s=tick_s)
    wall = time.perf_counter() - began
    metrics = summarize(run)["metrics"]
    assert metrics["finished"] + metrics["rejected"] == jobs, metrics
    return Result(
        label, policy, jobs, nodes, run.events, run.passes, run.skipped, wall,
        metrics["wait_mean_s"], metrics["gpu_utilization"],
    )  # fmt: skip


def report(result: Result, baseline: Result | None) -> None:
    ratio = f"  x{result.wall_s / baseline.wall_s:.2f} wall vs {baseline.label}" if baseline else ""
    print(
        f"{result.label:<7} {result.policy:<30} jobs={result.jobs:<7} nodes={result.nodes:<5} "
        f"events={result.events:<7} passes={result.passes:<7} skipped={result.skipped:<7} "
        f"wall={result.wall_s:8.1f}s jobs/s={result.jobs_per_s:8.0f} "
        f"ms/pass={result.ms_per_pass:6.2f} wait_mean={result.wait_mean_s / 60:7.1f}min "
        f"gpu_util={result.gpu_utilization:.3f}{ratio}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--load", type=float, default=0.9, help="offered load (default 0.9)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--policy",
        action="append",
        choices=EXAMPLE_POLICIES,
        help="example policies to run (default: fifo and fairshare-backfill)",
    )
    parser.add_argument("--baseline-jobs", type=int, default=10_000)
    parser.add_argument("--baseline-nodes", type=int, default=100)
    parser.add_argument(
        "--tick", type=float, default=0.0, help="scheduling interval, s (0: events)"
    )
    parser.add_argument("--quick", action="store_true", help="10,000 jobs on 1,000 nodes")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.baseline_jobs = 10_000, 1_000
    policies = args.policy or ["fifo", "fairshare-backfill"]

    small: dict[str, Result] = {}
    for policy in policies:
        small[policy] = measure(
            "small",
            args.baseline_jobs,
            args.baseline_nodes,
            args.load,
            args.seed,
            policy,
            args.tick,
        )
        report(small[policy], None)
    big: list[Result] = []
    for policy in policies:
        result = measure("big", args.jobs, args.nodes, args.load, args.seed, policy, args.tick)
        report(result, big[0] if big else small[policy])
        big.append(result)
    for result in big:
        base = small[result.policy]
        print(
            f"{result.policy}: {result.jobs / base.jobs:.0f}x the jobs on "
            f"{result.nodes / base.nodes:.0f}x the nodes cost {result.wall_s / base.wall_s:.1f}x "
            f"the time ({result.ms_per_pass / base.ms_per_pass:.1f}x per pass)"
        )
    slowest = max(big, key=lambda r: r.wall_s)
    print(f"jobs_per_s={slowest.jobs_per_s:.0f} wall_s={slowest.wall_s:.1f}")


if __name__ == "__main__":
    main()
