"""What rho's isolated replays add to a long replay, made in the caller and in workers.

Run: ``.venv/bin/python bench/sim_isolated.py`` (``--jobs 100000 --nodes 1000`` by
default, a few minutes; ``--help``).

``virtuai sim`` reports Themis' rho, which needs each job's completion time had its
tenant run alone on its slice of the cluster: one replay per tenant, under one
reference policy (``sim/isolated.py``).  On a long Philly-shaped trace a heavy tenant
alone on its sixth queues far longer than in the shared cluster, and those replays
cost as much as the policy's own.  This replays the seeded trace (``bench/sim.py``'s
shape, load 0.9) under ``--policy`` with the isolated replays made after it in the
caller (the baseline, as ``virtuai sim`` did before), then with them under way in
worker processes from the start (``IsolatedReplays.start``: one per spare core), and
checks that both give the same completion times.  The last line is

    isolated_wall_ratio=R replay_s=N isolated_s=N workers=K

R: the wall time of the replay and its isolated replays in workers over that in the
caller (at best the policy's replay alone over both; 1.0 with no spare core).
"""

from __future__ import annotations

import argparse
import time

from virtuai.sim.engine import simulate
from virtuai.sim.isolated import IsolatedReplays, Isolation, spare_cores
from virtuai.sim.philly import philly_cluster, philly_trace
from virtuai.sim.policy import example_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--policy", default="fairshare-backfill")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    cluster = philly_cluster(args.nodes)
    jobs = philly_trace(cluster, args.jobs, seed=args.seed, load=0.9)
    policy = example_policy(args.policy)

    began = time.perf_counter()
    simulate(jobs, cluster, policy)
    replayed = time.perf_counter() - began
    here = IsolatedReplays.start(jobs, cluster, Isolation.SIMULATE, workers=0).result()
    in_caller = time.perf_counter() - began
    print(
        f"caller jobs={args.jobs} nodes={args.nodes} policy={args.policy} "
        f"replay={replayed:.1f}s isolated={in_caller - replayed:.1f}s wall={in_caller:.1f}s",
        flush=True,
    )

    workers = spare_cores()
    began = time.perf_counter()
    replays = IsolatedReplays.start(jobs, cluster, Isolation.SIMULATE, workers=workers)
    simulate(jobs, cluster, policy)
    beside = time.perf_counter() - began
    if replays.result() != here:
        raise SystemExit("the isolated replays in workers differ from those in the caller")
    in_workers = time.perf_counter() - began
    print(
        f"workers={workers} replay={beside:.1f}s waited={in_workers - beside:.1f}s "
        f"wall={in_workers:.1f}s",
        flush=True,
    )
    print(
        f"isolated_wall_ratio={in_workers / in_caller:.2f} replay_s={replayed:.1f} "
        f"isolated_s={in_caller - replayed:.1f} workers={workers}"
    )


if __name__ == "__main__":
    main()
