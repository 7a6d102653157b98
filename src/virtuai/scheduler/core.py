"""One scheduling pass: order the queue, then admit or block each job with a reason.

The rules, in the order they are applied to each job:

1. ``NEVER``: the job could not run even on idle nodes within its quota
   (``feasibility``).  It is skipped and blocks no one.
2. ``QUOTA``: its tenant's hard quota, counting work admitted earlier in this
   pass, has no room for it.  It waits, but does not hold up other tenants.
3. ``QUEUE``: an earlier job is waiting for capacity.  The queue is strict
   priority-FIFO: nothing may overtake the first job that does not fit, so a
   big gang is not starved by a stream of small jobs.  (EASY backfill will
   relax this: a later job may start if it ends before the head's reservation.)
4. Placement (``placement.Cluster``): all tasks or none, best fit onto devices.
   If it fails the job is the head, ``CAPACITY``, and rule 3 starts to apply.

The pass is pure and deterministic: jobs are sorted on a total key, nodes are
visited in name order, and no decision depends on dict or set iteration order.
Once the head is blocked, each later job costs a cached feasibility lookup and
a quota check, which keeps a 100,000-job queue well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.placement import Cluster
from virtuai.scheduler.quota import QuotaLedger
from virtuai.scheduler.reasons import NEVER_PREFIX, capacity_reason, queue_reason
from virtuai.scheduler.snapshot import (
    Admission,
    Blocked,
    BlockKind,
    Decisions,
    PendingJob,
    Snapshot,
)

__all__ = ["queue_order", "schedule"]


def _order_key(job: PendingJob) -> tuple[int, float, int, str]:
    return (-job.priority, job.submitted_at, job.seq, job.id)


def queue_order(pending: Iterable[PendingJob]) -> list[PendingJob]:
    """The order jobs are considered in: higher priority, then earlier submission, then seq.

    The job id is the last tie-break so that the order is total and does not
    depend on the order the snapshot lists jobs in.  Fair-share ordering
    will replace this function (it needs tenants' usage; pass it in then).
    """
    return sorted(pending, key=_order_key)


def schedule(snapshot: Snapshot) -> Decisions:
    """Decide, for every pending job, to admit it (with placements) or why it waits.

    Every job in ``snapshot.pending`` gets exactly one decision.  ``admitted``
    and ``blocked`` are both in queue order; ``Blocked.position`` counts the
    jobs that still wait after this pass (``NEVER`` ones included) from 1.
    """
    cluster = Cluster(snapshot.nodes)
    ledger = QuotaLedger(snapshot.tenants)
    feasibility = Feasibility(state.node for state in snapshot.nodes)
    admitted: list[Admission] = []
    blocked: list[Blocked] = []
    behind_head: str | None = None  # the QUEUE reason, once the head is blocked

    for job in queue_order(snapshot.pending):
        never = feasibility.reason(job, ledger.quota_of(job.tenant), job.tenant)
        if never is not None:
            kind, reason = BlockKind.NEVER, NEVER_PREFIX + never
        elif (waiting := ledger.blocked_reason(job)) is not None:
            kind, reason = BlockKind.QUOTA, waiting
        elif behind_head is not None:
            kind, reason = BlockKind.QUEUE, behind_head
        elif (placements := cluster.try_place(job)) is not None:
            ledger.charge(job)
            admitted.append(Admission(job.id, placements))
            continue
        else:
            kind, reason = BlockKind.CAPACITY, capacity_reason(job, cluster)
            behind_head = queue_reason(job)
        blocked.append(Blocked(job.id, kind, reason, len(blocked) + 1))

    return Decisions(admitted=tuple(admitted), blocked=tuple(blocked))
