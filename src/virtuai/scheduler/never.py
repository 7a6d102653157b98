"""Can a job ever run here?  On idle nodes, and under its tenant's quotas.

``Feasibility`` answers for the nodes and ``QuotaLedger.never_reason`` for the quotas of
the pool a job names (and its tenant's quota over all pools).  A job that names no pool
is charged to the pools it lands in: where its tenant has a quota for a single pool and
the other pools cannot hold all of its tasks, some must land in that pool, and if the
quota never lets in even those, the job waited for quota for ever.  The scheduler reports
such a job ``NEVER`` and the API refuses it at submit, in the same words.
"""

from __future__ import annotations

from dataclasses import replace

from virtuai.domain.sites import is_site_pool
from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.quota import Charge, QuotaLedger
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["never_reason"]


def never_reason(
    feasibility: Feasibility,
    ledger: QuotaLedger,
    job: PendingJob,
    *,
    may_borrow: bool = True,
    charge: Charge | None = None,
) -> str | None:
    """Why ``job`` can never run, or ``None`` (``charge``: ``ledger.charge_of_job(job)``, if
    the caller has it; ``may_borrow``: as ``QuotaLedger.blocked_reason``'s)."""
    reason = feasibility.node_reason(job) or ledger.never_reason(job, charge, may_borrow=may_borrow)
    if reason is not None or job.pool is not None or not ledger.has_pool_entries(job.tenant):
        return reason
    # (As ``_Pass.place`` lands a job that names no pool: never on a site's nodes.)
    pools = sorted({p for p in feasibility.pool_of.values() if not is_site_pool(p)})
    held = {pool: feasibility.tasks_held(pool, job) for pool in pools}
    for pool in pools:
        others = sum(n for p, n in held.items() if p != pool)
        least = job.tasks - others  # tasks that land in ``pool`` wherever the rest go
        if least <= 0:
            continue
        refused = ledger.never_reason(replace(job, pool=pool, tasks=least), may_borrow=may_borrow)
        if refused is not None:
            if least == job.tasks:
                return refused
            return (
                f"{refused} (at least {least} of its {job.tasks} tasks land there: "
                f"the other pools hold {others})"
            )
    return None
