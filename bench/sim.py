"""Benchmark of scheduling policies and of the simulator (``docs/benchmarks.md``, Policies).

Run: ``.venv/bin/python bench/sim.py`` (``--quick`` for a smoke run; ``--help``).

1. **Heavy load** (queueing dominates): a seeded Philly-shaped trace
   (``virtuai.sim.philly``: published job-size, duration and user-share shapes;
   offered GPU load 1.2x capacity with a daily cycle) on ``--nodes`` 8-GPU
   machines, replayed under FIFO (the baseline), fair share, fair share + EASY
   backfill, and ``las-fairshare`` (the new policy).  Reported: mean JCT and its
   ratio to FIFO's, per-tenant mean JCT against fair share alone, Jain's index
   over the contended time against fair share's, rho (one common reference
   policy for every policy's T_id), preemptions and lost GPU-hours.
2. **Light load** (offered load 0.45): FIFO, fair share + backfill and
   ``las-fairshare``, and the share
   of the gap between FIFO's mean JCT and the zero-wait bound (the mean run
   time) that the new policy closes.
3. **Poor walltimes** (heavy load, same jobs): every job asks for the 3-day
   default (``walltimes="default"``) or gives none (``"none"``), as on clusters
   where users do not estimate.  FIFO (the baseline of each), fair share + EASY
   backfill, and ``las-fairshare``; reported: mean JCT, ratio to FIFO, and the
   ratio of fair share + backfill's mean JCT to ``las-fairshare``'s.
4. **Speed**: ``--speed-jobs`` Philly-shaped jobs on ``--speed-nodes`` nodes under
   ``--speed-policy`` (``fairshare-backfill``, the policy of the issue's timing),
   timing ``simulate()`` alone (wall and CPU seconds); the same policy on a tenth
   of the jobs and nodes is the baseline in the same run (CPU is shared: read
   ratios).  ``--speed-quotas`` gives the tenants GPU quotas (``cohort``: a sixth
   of the GPUs each, in one cohort that lends what is idle; ``hard``: a third
   each, no cohort); the tenth is then also replayed without, as a baseline.

The last line is
``jct_ratio_vs_fifo=R jain_ratio_vs_fairshare=R rho_max=X sim_100k_s=N``
(heavy load; ``sim_100k_s`` is the speed replay's wall time, whatever its size).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from virtuai.domain.tenancy import Quota
from virtuai.sim.cluster import ClusterSpec
from virtuai.sim.engine import SimRun, simulate
from virtuai.sim.isolated import Isolation, isolated_jct
from virtuai.sim.metrics import summarize
from virtuai.sim.philly import philly_cluster, philly_trace, regime
from virtuai.sim.policy import example_policy

HEAVY = ("fifo", "fairshare", "fairshare-backfill", "las-fairshare")
LIGHT = ("fifo", "fairshare-backfill", "las-fairshare")


def replay(
    jobs: int,
    nodes: int,
    load: float,
    seed: int,
    policy: str,
    tick: float,
    walltimes: str = "estimate",
) -> SimRun:
    cluster = philly_cluster(nodes)
    trace = philly_trace(cluster, jobs, seed=seed, load=load, walltimes=walltimes)
    return simulate(trace, cluster, example_policy(policy), tick_s=tick)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def tenant_jct(run: SimRun) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for k, job in enumerate(run.jobs):
        if math.isfinite(run.finish[k]):
            acc = sums.setdefault(job.tenant, [0.0, 0.0])
            acc[0] += run.finish[k] - job.submit
            acc[1] += 1
    return {t: s / n for t, (s, n) in sorted(sums.items())}


def heavy(args: argparse.Namespace) -> dict[str, Any]:
    load = regime("heavy").load
    runs: dict[str, SimRun] = {}
    metrics: dict[str, dict[str, Any]] = {}
    iso: list[float] | None = None
    for name in HEAVY:
        began = time.perf_counter()
        run = runs[name] = replay(args.jobs, args.nodes, load, args.seed, name, args.tick)
        wall = time.perf_counter() - began
        if iso is None:  # one common reference for every policy's T_id
            iso, _ = isolated_jct(run, Isolation.SIMULATE, tick_s=args.tick)
        m = metrics[name] = summarize(run, iso)["metrics"]
        print(
            f"heavy {name:<20} jct_mean={m['jct_mean_s'] / 3600:7.2f}h "
            f"wait_mean={m['wait_mean_s'] / 3600:7.2f}h "
            f"jain_contended={_num(m['jain_contended'])} over {m['contended_s'] / 3600:.1f}h "
            f"rho_max={m['rho_max']:.2f} preemptions={m['preemptions']} "
            f"lost_gpu_h={m['lost_gpu_hours']:.0f} wall={wall:.1f}s",
            flush=True,
        )
    fifo, new, fair = metrics["fifo"], metrics["las-fairshare"], metrics["fairshare"]
    zero = sum(j.run_s for j in runs["fifo"].jobs) / len(runs["fifo"].jobs)
    print(f"heavy zero-wait bound (mean run time) {zero / 3600:.2f}h")
    fair_t, new_t = tenant_jct(runs["fairshare"]), tenant_jct(runs["las-fairshare"])
    for tenant, value in new_t.items():
        print(
            f"heavy tenant {tenant:<10} las-fairshare={value / 3600:7.2f}h "
            f"fairshare={fair_t[tenant] / 3600:7.2f}h ratio={value / fair_t[tenant]:.2f}"
        )
    worst = max(new_t[t] / fair_t[t] for t in new_t)
    return {
        "jct_ratio": fifo["jct_mean_s"] / new["jct_mean_s"],
        # Jain over the whole run's dominant shares when no window was contended.
        "jain_ratio": (new["jain_contended"] or new["jain"])
        / (fair["jain_contended"] or fair["jain"]),
        "rho_max": new["rho_max"],
        "worst_tenant_vs_fairshare": worst,
    }


def light(args: argparse.Namespace) -> float:
    load = regime("light").load
    jct: dict[str, float] = {}
    zero = 0.0
    for name in LIGHT:
        run = replay(args.jobs, args.nodes, load, args.seed, name, args.tick)
        jct[name] = summarize(run)["metrics"]["jct_mean_s"]
        zero = sum(j.run_s for j in run.jobs) / len(run.jobs)
        print(f"light {name:<20} jct_mean={jct[name] / 3600:7.3f}h", flush=True)

    def gap(name: str) -> float:
        return (jct["fifo"] - jct[name]) / max(1e-9, jct["fifo"] - zero)

    print(
        f"light zero-wait bound {zero / 3600:.3f}h; gap closed: las-fairshare "
        f"{100 * gap('las-fairshare'):.1f}%, fairshare-backfill "
        f"{100 * gap('fairshare-backfill'):.1f}%"
    )
    return gap("las-fairshare")


def poor(args: argparse.Namespace) -> dict[str, float]:
    """Heavy load when walltimes say nothing: backfill has no short jobs to fit in."""
    load = regime("heavy").load
    found = {}
    for kind in ("default", "none"):
        jct: dict[str, float] = {}
        for name in ("fifo", "fairshare-backfill", "las-fairshare"):
            run = replay(args.jobs, args.nodes, load, args.seed, name, args.tick, kind)
            jct[name] = summarize(run)["metrics"]["jct_mean_s"]
            print(
                f"poor walltimes={kind:<8} {name:<20} jct_mean={jct[name] / 3600:7.2f}h "
                f"vs_fifo={jct['fifo'] / jct[name]:.2f}x preemptions={sum(run.preemptions)}",
                flush=True,
            )
        found[kind] = jct["fairshare-backfill"] / jct["las-fairshare"]
        print(f"poor walltimes={kind:<8} las-fairshare vs fairshare-backfill {found[kind]:.2f}x")
    return found


def with_quotas(cluster: ClusterSpec, kind: str) -> ClusterSpec:
    """``cluster`` with a GPU quota per tenant (``--speed-quotas``)."""
    if kind == "none":
        return cluster
    gpus = sum(pool.count * pool.gpus for pool in cluster.pools)
    share = math.ceil(gpus / len(cluster.tenants))
    tenants = tuple(
        replace(t, quota=Quota(gpu=share), cohort="lab")
        if kind == "cohort"
        else replace(t, quota=Quota(gpu=2 * share))
        for t in cluster.tenants
    )
    return replace(cluster, tenants=tenants)


def speed_run(args: argparse.Namespace, jobs: int, nodes: int, quotas: str) -> float:
    """One speed replay; its wall time."""
    cluster = philly_cluster(nodes)
    trace = philly_trace(cluster, jobs, seed=args.seed, load=0.9)
    cluster = with_quotas(cluster, quotas)
    began = time.perf_counter()
    cpu = time.process_time()
    run = simulate(trace, cluster, example_policy(args.speed_policy), tick_s=args.tick)
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu
    print(
        f"speed jobs={jobs} nodes={nodes} quotas={quotas} passes={run.passes} "
        f"events={run.events} wall={wall:.1f}s cpu={cpu:.1f}s "
        f"ms/pass={1000 * wall / max(1, run.passes):.2f}",
        flush=True,
    )
    return wall


def speed(args: argparse.Namespace) -> float:
    tenth = (args.speed_jobs // 10, args.speed_nodes // 10)
    if args.speed_quotas != "none":
        plain = speed_run(args, *tenth, "none")
    small = speed_run(args, *tenth, args.speed_quotas)
    if args.speed_quotas != "none":
        print(f"speed quotas ({args.speed_quotas}) cost {small / plain:.1f}x the time")
    wall = speed_run(args, args.speed_jobs, args.speed_nodes, args.speed_quotas)
    print(f"speed 10x jobs and nodes cost {wall / small:.1f}x the time")
    return wall


def seeds(args: argparse.Namespace, numbers: Sequence[int]) -> None:
    """Heavy and light load for other seeds of the generator: a policy is judged on many
    traces, not tuned to one (one line per seed and regime, then the spread over seeds:
    min/median/max of the light gap closed, of the heavy ratio to FIFO, and of the worst
    tenant against fair share alone)."""
    spread: dict[str, list[float]] = {"light gap": [], "heavy vs fifo": [], "heavy worst": []}
    for seed in numbers:
        for kind in ("heavy", "light"):
            load = regime(kind).load
            runs = {
                name: replay(args.jobs, args.nodes, load, seed, name, args.tick)
                for name in ("fifo", "fairshare", "fairshare-backfill", "las-fairshare")
            }
            jct = {name: sum(tenant_n(run)) / len(run.jobs) for name, run in runs.items()}
            zero = sum(j.run_s for j in runs["fifo"].jobs) / len(runs["fifo"].jobs)
            fair_t = tenant_jct(runs["fairshare"])
            worst = {
                name: max(v / fair_t[t] for t, v in tenant_jct(runs[name]).items())
                for name in ("fairshare-backfill", "las-fairshare")
            }
            gap = {
                name: (jct["fifo"] - jct[name]) / max(1e-9, jct["fifo"] - zero)
                for name in ("fairshare-backfill", "las-fairshare")
            }
            print(
                f"seed={seed} {kind} fifo={jct['fifo'] / 3600:.3f}h bound={zero / 3600:.3f}h "
                f"las-fairshare={jct['las-fairshare'] / 3600:.3f}h "
                f"vs_fifo={jct['fifo'] / jct['las-fairshare']:.2f}x "
                f"gap_closed={100 * gap['las-fairshare']:.1f}% "
                f"worst_tenant_vs_fairshare={worst['las-fairshare']:.3f} "
                f"(fairshare-backfill {jct['fifo'] / jct['fairshare-backfill']:.2f}x "
                f"{100 * gap['fairshare-backfill']:.1f}% {worst['fairshare-backfill']:.3f})",
                flush=True,
            )
            if kind == "light":
                spread["light gap"].append(100 * gap["las-fairshare"])
            else:
                spread["heavy vs fifo"].append(jct["fifo"] / jct["las-fairshare"])
                spread["heavy worst"].append(worst["las-fairshare"])
    print(
        f"seeds={len(numbers)} las-fairshare "
        + " ".join(
            f"{name.replace(' ', '_')}(min/median/max)="
            f"{min(v):.3f}/{statistics.median(v):.3f}/{max(v):.3f}"
            for name, v in spread.items()
        ),
        flush=True,
    )


def tenant_n(run: SimRun) -> list[float]:
    """Every finished job's JCT."""
    return [
        run.finish[k] - job.submit for k, job in enumerate(run.jobs) if math.isfinite(run.finish[k])
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs of the policy traces")
    parser.add_argument("--nodes", type=int, default=64, help="8-GPU nodes for them")
    parser.add_argument("--speed-jobs", type=int, default=100_000)
    parser.add_argument("--speed-nodes", type=int, default=1000)
    parser.add_argument("--speed-policy", default="fairshare-backfill")
    parser.add_argument("--speed-quotas", choices=("none", "cohort", "hard"), default="none")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick", type=float, default=0.0, help="scheduling interval, s")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs; speed on 10,000")
    parser.add_argument(
        "--seeds",
        default="",
        help="also replay heavy and light load with these trace seeds (1,2,3), one line each",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.nodes, args.speed_jobs, args.speed_nodes = 2000, 32, 10_000, 100
    if args.seeds:
        seeds(args, [int(s) for s in args.seeds.split(",")])
    found = heavy(args)
    closed = light(args)
    worse = poor(args)
    wall = speed(args)
    print(
        f"las_vs_backfill_default_walltime={worse['default']:.2f} "
        f"las_vs_backfill_no_walltime={worse['none']:.2f}"
    )
    print(
        f"light_gap_closed={closed:.3f} worst_tenant_vs_fairshare="
        f"{found['worst_tenant_vs_fairshare']:.2f}"
    )
    print(
        f"jct_ratio_vs_fifo={found['jct_ratio']:.2f} jain_ratio_vs_fairshare="
        f"{found['jain_ratio']:.2f} rho_max={found['rho_max']:.2f} sim_100k_s={wall:.1f}"
    )


if __name__ == "__main__":
    main()
