"""Each job's completion time in an isolated cluster of its tenant's share (Themis's T_id).

Themis (Mahajan et al., NSDI 2020) calls a sharing scheme fair when every job's
rho = T_shared / T_id is at most 1, T_id being the job's completion time had
its tenant run alone on 1/N of the cluster.  Two estimates of T_id:

``simulate`` (default)
    Replay each tenant's jobs alone, under one common *reference* policy
    (``REFERENCE``: priority-FIFO with EASY backfill, no preemption), on a slice of the
    cluster: every pool keeps ``round(count x share)`` nodes (at least one), with
    ``share`` = the tenant's weight / the sum of the weights of the trace's
    tenants (1/N for equal weights), and no quota (the slice is the limit).  This
    counts the queueing a tenant causes itself.  A job that cannot run at all on
    the slice (a gang larger than it) gets the ``scale`` estimate instead; the
    report counts these as ``isolated_fallbacks``.
``scale``
    No replay: T_id = run x max(1, d / share), d being the job's dominant share
    of the whole cluster: a job that fits in its tenant's slice runs at once, a
    bigger one as if slowed down to fit.  Fast, but blind to queueing.

One reference for every policy compared makes rho comparable across them
(replaying each policy's isolated run under that same policy made plain FIFO
look fairer than backfill only because its own T_id was worse), and the
isolated replays are then made once per trace, not once per policy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from virtuai.sim.engine import Outcome, SimRun, simulate
from virtuai.sim.policy import Backfill, Order, PolicySpec
from virtuai.sim.trace import TraceJob

__all__ = ["REFERENCE", "Isolation", "isolated_jct"]

REFERENCE = PolicySpec(
    "reference",
    Order.FIFO,
    backfill=Backfill.EASY,
    description="T_id reference: priority-FIFO with EASY backfill, no preemption",
)


class Isolation(enum.StrEnum):
    SIMULATE = "simulate"
    SCALE = "scale"


def tenant_shares(run: SimRun) -> dict[str, float]:
    """Each trace tenant's share: its weight over the sum of the weights."""
    names = sorted({job.tenant for job in run.jobs})
    weights = {name: run.cluster.tenant(name).weight for name in names}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def isolated_jct(
    run: SimRun,
    method: Isolation = Isolation.SIMULATE,
    *,
    tick_s: float = 0.0,
    reference: PolicySpec = REFERENCE,
    note: Callable[[str], None] | None = None,
) -> tuple[list[float], int]:
    """``(T_id per job of run.jobs (NaN for jobs that did not finish), fallbacks)``.

    ``fallbacks`` counts the jobs whose T_id fell back to the ``scale`` estimate
    because they cannot run on their tenant's slice.  ``note`` hears of each tenant's
    replay as it starts (on a long trace they take minutes together).
    """
    shares = tenant_shares(run)
    scaled = _scaled(run, shares)
    if method is Isolation.SCALE:
        return scaled, 0
    iso = [math.nan] * len(run.jobs)
    number = {job.id: j for j, job in enumerate(run.jobs)}
    fallbacks = 0
    for place, (tenant, share) in enumerate(shares.items(), start=1):
        mine: list[TraceJob] = [job for job in run.jobs if job.tenant == tenant]
        if note is not None:
            note(f"isolated replay {place} of {len(shares)}: tenant {tenant}, {len(mine):,} jobs")
        alone = simulate(mine, run.cluster.sliced(share, tenant), reference, tick_s=tick_s)
        for k, job in enumerate(alone.jobs):
            if alone.outcome[k] in (Outcome.SUCCEEDED, Outcome.TIMED_OUT):
                iso[number[job.id]] = alone.finish[k] - job.submit
            else:
                iso[number[job.id]] = scaled[number[job.id]]
                fallbacks += 1
    return iso, fallbacks


def _scaled(run: SimRun, shares: dict[str, float]) -> list[float]:
    cap = run.cluster.capacity
    capacity = (cap.cpu_milli, cap.memory, cap.gpu)
    out = []
    for job in run.jobs:
        total = job.total
        demand = max(
            (
                amount / whole
                for amount, whole in zip(
                    (total.cpu_milli, total.memory, total.gpu), capacity, strict=True
                )
                if whole
            ),
            default=0.0,
        )
        out.append(job.run_s * max(1.0, demand / shares[job.tenant]))
    return out
