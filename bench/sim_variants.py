"""Variants of ``las-fairshare`` on the fixed-seed traces of #12's rounds (``docs/benchmarks.md``).

Run: ``.venv/bin/python bench/sim_variants.py --kind light --seeds 1-10 --variants base,early``
(``--jobs 2000 --nodes 32`` by default; 5,000 on 64 for the larger traces).

Each trace is ``bench/sim.py``'s Philly-shaped trace of that seed (light load 0.45 or
heavy 1.2, or ``--load``), replayed through ``simulate()`` with tick 0 under FIFO, fair
share alone and each variant: ``las-fairshare`` as shipped with some ``PolicySpec``
fields replaced, or ``fairshare-backfill`` (``fsbf``) for reference.  ``--walltimes
exact`` gives the variants (not FIFO, whose order ignores limits) time limits equal to
the durations plus a minute: what knowing run times exactly would be worth.  FIFO and
fair share are cached in ``--cache`` (JSON per trace and policy, nothing else), so a new
variant costs one replay per trace.  One line per trace and variant:

- light: the share of the gap between FIFO's mean JCT and the zero-wait bound (the mean
  run time) that the variant closes, and FIFO's mean JCT over the bound (how much
  queueing there is to remove);
- heavy: FIFO's mean JCT over the variant's, and the worst tenant (highest ratio of its
  mean JCT to its mean JCT under fair share alone).

Then, per variant, min / median / max and how many traces meet the light target (90%).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from virtuai.sim.engine import SimRun, simulate
from virtuai.sim.philly import philly_cluster, philly_trace, regime
from virtuai.sim.policy import PolicySpec, example_policy

# name -> the fields of ``las-fairshare`` it replaces.  Round 9: "base" is
# ``las-fairshare`` before it (no gang victims); "gvict2" is ``las-fairshare`` since (a
# tenant's gangs are LAS victims of smaller jobs above twice its fair share).  Round 10:
# the fair-share half-life and the weight of the current allocation.
VARIANTS: dict[str, dict[str, Any]] = {
    "las": {},  # as shipped
    "base": {"gang_victim_ratio": 0.0},
    "gvict": {"gang_victim_ratio": 1.0},
    "gvict2": {"gang_victim_ratio": 2.0},
    "gvict3": {"gang_victim_ratio": 3.0},
    "hl1h": {"half_life_s": 3600.0},
    "hl6h": {"half_life_s": 6 * 3600.0},
    "hl1d": {"half_life_s": 86400.0},
    "aw0": {"allocation_weight": 0.0},
    "aw1": {"allocation_weight": 1.0},
}
REFERENCES = {"fifo": "fifo", "fairshare": "fairshare", "fsbf": "fairshare-backfill"}


def _spec(name: str) -> PolicySpec:
    if name in REFERENCES:
        return example_policy(REFERENCES[name])
    return dataclasses.replace(example_policy("las-fairshare"), **VARIANTS[name])


def _summary(run: SimRun) -> dict[str, Any]:
    sums: dict[str, list[float]] = {}
    total, count = 0.0, 0
    for k, job in enumerate(run.jobs):
        if math.isfinite(run.finish[k]):
            jct = run.finish[k] - job.submit
            acc = sums.setdefault(job.tenant, [0.0, 0.0])
            acc[0] += jct
            acc[1] += 1
            total += jct
            count += 1
    return {
        "jct": total / max(1, count),
        "bound": sum(j.run_s for j in run.jobs) / len(run.jobs),
        "tenants": {t: s / n for t, (s, n) in sorted(sums.items())},
        "preemptions": sum(run.preemptions),
        "passes": run.passes,
    }


def replay(args: argparse.Namespace, seed: int, name: str) -> dict[str, Any]:
    reference = name in ("fifo", "fairshare")
    tag = (f"-load{args.load}" if args.load else "") + (
        "" if reference or args.walltimes == "estimate" else f"-{args.walltimes}"
    )
    path = Path(args.cache) / f"{args.jobs}-{args.nodes}-{args.kind}{tag}-{seed}-{name}.json"
    cached = reference or args.cache_variants
    if cached and path.exists():
        found: dict[str, Any] = json.loads(path.read_text())
        return found
    cluster = philly_cluster(args.nodes)
    load = args.load or regime(args.kind).load
    trace = philly_trace(cluster, args.jobs, seed=seed, load=load)
    if args.walltimes == "exact" and name != "fifo":
        trace = [
            dataclasses.replace(j, walltime=60.0 * math.ceil(j.duration / 60.0 + 1.0))
            for j in trace
        ]
    began = time.process_time()
    result = _summary(simulate(trace, cluster, _spec(name), tick_s=0.0))
    result["cpu_s"] = time.process_time() - began
    if cached:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
    return result


def _seeds(text: str) -> list[int]:
    found: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        found.extend(range(int(lo), int(hi or lo) + 1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kind", choices=("light", "heavy"), default="light")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--seeds", default="1-10")
    parser.add_argument("--variants", default="base", help=f"of {', '.join([*VARIANTS, 'fsbf'])}")
    parser.add_argument("--load", type=float, default=0.0, help="offered load (0: the kind's)")
    parser.add_argument("--walltimes", choices=("estimate", "exact"), default="estimate")
    parser.add_argument("--cache", default="/tmp/virtuai-sim-variants")
    parser.add_argument(
        "--cache-variants", action="store_true", help="cache the variants' replays too"
    )
    args = parser.parse_args()
    names = args.variants.split(",")
    score: dict[str, list[float]] = {n: [] for n in names}
    for seed in _seeds(args.seeds):
        fifo = replay(args, seed, "fifo")
        fair = replay(args, seed, "fairshare") if args.kind == "heavy" else None
        for name in names:
            run = replay(args, seed, name)
            if fair is None:
                value = (fifo["jct"] - run["jct"]) / max(1e-9, fifo["jct"] - fifo["bound"])
                score[name].append(100 * value)
                over = fifo["jct"] / fifo["bound"]
                shown = f"gap_closed={100 * value:.1f}% fifo_over_bound={over:.2f}"
            else:
                worst = max(run["tenants"], key=lambda t: run["tenants"][t] / fair["tenants"][t])
                ratio = fifo["jct"] / run["jct"]
                score[name].append(ratio)
                shown = (
                    f"vs_fifo={ratio:.2f}x worst={worst} "
                    f"{run['tenants'][worst] / fair['tenants'][worst]:.3f}"
                )
            print(
                f"{args.kind} {args.jobs} seed={seed} {name:<12} {shown} "
                f"jct={run['jct'] / 3600:.3f}h preemptions={run['preemptions']} "
                f"cpu={run.get('cpu_s', 0.0):.1f}s",
                flush=True,
            )
    for name, values in score.items():
        extra = f" >=90%: {sum(v >= 90 for v in values)}" if args.kind == "light" else ""
        print(
            f"{name}: min/median/max {min(values):.2f} / {statistics.median(values):.2f} / "
            f"{max(values):.2f}{extra}"
        )


if __name__ == "__main__":
    main()
