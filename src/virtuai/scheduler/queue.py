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

Shortest first (``Policy.short_first_cap_s``, on in ``Policy.las()``): within a
priority and LAS level, jobs go by their *due time*, submission time plus time
limit (capped; a job without a limit counts the cap), instead of submission
time alone.  Shorter jobs go first, which cuts mean waiting when a burst meets
a full cluster, yet a job is overtaken only by jobs due before it, i.e.
submitted before its own submission plus its limit, so none starves.  The key
is fixed at submission, like the others.

Both orders are total (the id is the last key) and do not depend on the order
of the snapshot's tuples.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from virtuai.scheduler.fairshare import ShareTracker
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["Due", "due_by", "fair_order", "order_key", "queue_order"]


Level = Callable[[PendingJob], int]
Due = Callable[[PendingJob], float]


def due_by(cap_s: float) -> Due:
    """A job's due time: submitted at plus its time limit, at most ``cap_s`` (the cap
    when it has none)."""

    def due(job: PendingJob) -> float:
        limit = job.walltime_s
        return job.submitted_at + (cap_s if limit is None else min(float(limit), cap_s))

    return due


def _submitted(job: PendingJob) -> float:
    return job.submitted_at


def _no_level(job: PendingJob) -> int:
    return 0


def order_key(job: PendingJob) -> tuple[bool, int, float, int, str]:
    return (not job.nominated, -job.priority, job.submitted_at, job.seq, job.id)


def queue_order(
    pending: Iterable[PendingJob], level: Level = _no_level, due: Due | None = None
) -> list[PendingJob]:
    """The v1 order: higher priority, then earlier submission, then seq, then id (with
    ``level``: the level goes right after the priority; with ``due``: the due time goes
    before the submission time)."""
    if level is _no_level and due is None:
        return sorted(pending, key=order_key)
    when = _submitted if due is None else due
    return sorted(
        pending,
        key=lambda j: (
            not j.nominated, -j.priority, level(j), when(j), j.submitted_at, j.seq, j.id
        ),
    )  # fmt: skip


def fair_order(
    pending: Iterable[PendingJob],
    tracker: ShareTracker,
    level: Level = _no_level,
    due: Due | None = None,
) -> Iterator[PendingJob]:
    """Jobs in fair-share order; read ``tracker`` lazily, so update it before asking for more."""
    by_tenant: dict[str, list[PendingJob]] = {}
    for job in pending:
        by_tenant.setdefault(job.tenant, []).append(job)
    when = _submitted if due is None else due
    heap: list[tuple[bool, int, float, float, float, int, str, str]] = []
    for tenant, jobs in by_tenant.items():
        if level is _no_level and due is None:
            jobs.sort(key=order_key, reverse=True)  # next job last, for pop()
        else:
            jobs[:] = queue_order(jobs, level, due)[::-1]
        head = jobs[-1]
        heap.append(_key(head, tracker.ratio(tenant), when(head)))
    heapq.heapify(heap)
    while heap:
        tenant = heapq.heappop(heap)[-1]
        jobs = by_tenant[tenant]
        yield jobs.pop()
        if jobs:
            head = jobs[-1]
            heapq.heappush(heap, _key(head, tracker.ratio(tenant), when(head)))


def _key(
    job: PendingJob, ratio: float, when: float
) -> tuple[bool, int, float, float, float, int, str, str]:
    return (
        not job.nominated, -job.priority, ratio, when, job.submitted_at, job.seq, job.id,
        job.tenant,
    )  # fmt: skip
