"""What a replay of many tenants costs, against the same jobs of a few (``docs/benchmarks.md``).

Run: ``.venv/bin/python bench/sim_tenants.py`` (``--tenants 1000 --jobs 50000 --nodes 250``
by default, about a minute; ``--help``).

Alibaba's PAI trace has about 1,300 users, and ``--format pai`` makes each one a tenant.
This replays a generated trace (``virtuai sim generate``'s: ``--tenants`` equal tenants)
under ``--policy`` and summarizes it (the figures ``virtuai sim`` prints, plots left out);
then the same jobs with their users mapped onto 4 tenants, the baseline measured in the
same run.  Per run: the replay's and the summary's CPU seconds, and the bytes its timeline
keeps.  The last line is

    tenants_cpu_ratio=R timeline_bytes_ratio=R

(many tenants over few): near 1 when a replay's cost follows its jobs, not its tenants.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from virtuai.sim.engine import simulate
from virtuai.sim.generate import generate_cluster, generate_trace, tenant_names
from virtuai.sim.metrics import summarize
from virtuai.sim.policy import example_policy
from virtuai.sim.trace import TraceJob

FEW = 4


def replay(label: str, jobs: list[TraceJob], tenants: int, args: argparse.Namespace) -> tuple[
    float, int
]:  # fmt: skip
    """One replay and its summary: (CPU seconds, timeline bytes)."""
    cluster = generate_cluster(args.nodes, tenants)
    cpu = time.process_time()
    run = simulate(jobs, cluster, example_policy(args.policy))
    replayed = time.process_time() - cpu
    summarize(run)
    total = time.process_time() - cpu
    print(
        f"{label} tenants={tenants} jobs={len(jobs)} nodes={args.nodes} "
        f"replay_cpu={replayed:.1f}s summary_cpu={total - replayed:.2f}s "
        f"timeline_mb={run.timeline.nbytes / 2**20:.1f}",
        flush=True,
    )
    return total, run.timeline.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--nodes", type=int, default=250)
    parser.add_argument("--policy", default="fairshare-backfill")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    jobs = generate_trace(generate_cluster(args.nodes, args.tenants), args.jobs, seed=args.seed)
    many = replay("many", jobs, args.tenants, args)
    few_names = tenant_names(FEW)
    group = {name: few_names[k % FEW] for k, name in enumerate(tenant_names(args.tenants))}
    few = replay("few", [replace(j, tenant=group[j.tenant]) for j in jobs], FEW, args)
    print(f"tenants_cpu_ratio={many[0] / few[0]:.2f} timeline_bytes_ratio={many[1] / few[1]:.2f}")


if __name__ == "__main__":
    main()
