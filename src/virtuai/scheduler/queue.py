"""The order a pass considers pending jobs in.

v1 (``Policy.fair_share`` off): priority, then submission time, then ``seq``,
then id, a plain sort.  Before all of them come *nominated* jobs (preemptors
whose victims were told to stop in an earlier pass): the room those victims
free is theirs, or a preemption could be wasted on someone else and repeated.

Fair share: priority, then the tenant's fair-share standing (``usage /
norm_shares``, lower first, i.e. higher factor first), then submission time,
``seq`` and id.  The standing is re-read every time a tenant's next job comes
up, so that a tenant whose jobs were just admitted moves back behind the
others *within* the pass (otherwise the tenant with the best factor would take
the whole free cluster in one pass).  This is a k-way merge of per-tenant
queues over a heap holding each tenant's next job: ``O(n log k)`` for ``n`` jobs
of ``k`` tenants, and a tenant's 10,000 identical array elements cost no more
than 10,000 different jobs.

Least attained service (``Policy.las_thresholds_gpu_s``, ``las.py``): within a
priority, a job's LAS level (lower first) comes before its submission time, in
both orders; between tenants the fair-share standing still decides first.

Both orders are total (the id is the last key) and do not depend on the order
of the snapshot's tuples.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from virtuai.scheduler.fairshare import ShareTracker
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["fair_order", "order_key", "queue_order"]


Level = Callable[[PendingJob], int]


def _no_level(job: PendingJob) -> int:
    return 0


def order_key(job: PendingJob) -> tuple[bool, int, float, int, str]:
    return (not job.nominated, -job.priority, job.submitted_at, job.seq, job.id)


def queue_order(pending: Iterable[PendingJob], level: Level = _no_level) -> list[PendingJob]:
    """The v1 order: higher priority, then earlier submission, then seq, then id (with
    ``level``: the level goes right after the priority)."""
    if level is _no_level:
        return sorted(pending, key=order_key)
    return sorted(
        pending,
        key=lambda j: (not j.nominated, -j.priority, level(j), j.submitted_at, j.seq, j.id),
    )


def fair_order(
    pending: Iterable[PendingJob], tracker: ShareTracker, level: Level = _no_level
) -> Iterator[PendingJob]:
    """Jobs in fair-share order; read ``tracker`` lazily, so update it before asking for more."""
    by_tenant: dict[str, list[PendingJob]] = {}
    for job in pending:
        by_tenant.setdefault(job.tenant, []).append(job)
    heap: list[tuple[bool, int, float, float, int, str, str]] = []
    for tenant, jobs in by_tenant.items():
        if level is _no_level:
            jobs.sort(key=order_key, reverse=True)  # next job last, for pop()
        else:
            jobs[:] = queue_order(jobs, level)[::-1]
        head = jobs[-1]
        heap.append(_key(head, tracker.ratio(tenant)))
    heapq.heapify(heap)
    while heap:
        tenant = heapq.heappop(heap)[-1]
        jobs = by_tenant[tenant]
        yield jobs.pop()
        if jobs:
            head = jobs[-1]
            heapq.heappush(heap, _key(head, tracker.ratio(tenant)))


def _key(job: PendingJob, ratio: float) -> tuple[bool, int, float, float, int, str, str]:
    return (not job.nominated, -job.priority, ratio, job.submitted_at, job.seq, job.id, job.tenant)
