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
than 10,000 different jobs.  The per-tenant queues are kept from one pass to the
next (``waiting.Waiting``), and the merge reads only as far as the pass goes.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from virtuai.scheduler.fairshare import ShareTracker
from virtuai.scheduler.snapshot import PendingJob
from virtuai.scheduler.waiting import Entry, Key, Waiting

__all__ = [
    "Due",
    "Skip",
    "due_by",
    "fair_merge",
    "fair_order",
    "merged",
    "order_key",
    "queue_key",
    "queue_order",
]


Level = Callable[[PendingJob], int]
Due = Callable[[PendingJob], float]
# (tenant, its queue, i) -> the index of its first job at or after i that needs a turn.
Skip = Callable[[str, Sequence[Entry], int], int]


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


def queue_key(level: Level = _no_level, due: Due | None = None) -> Key:
    """The sort key of the v1 order, with ``level`` and ``due`` as in ``queue_order``."""
    if level is _no_level and due is None:
        return order_key
    when = _submitted if due is None else due
    if level is _no_level:
        return lambda j: (not j.nominated, -j.priority, when(j), j.submitted_at, j.seq, j.id)
    return lambda j: (
        not j.nominated, -j.priority, level(j), when(j), j.submitted_at, j.seq, j.id
    )  # fmt: skip


def queue_order(
    pending: Iterable[PendingJob], level: Level = _no_level, due: Due | None = None
) -> list[PendingJob]:
    """The v1 order: higher priority, then earlier submission, then seq, then id (with
    ``level``: the level goes right after the priority; with ``due``: the due time goes
    before the submission time)."""
    return sorted(pending, key=queue_key(level, due))


def merged(queues: Mapping[str, Sequence[Entry]], skip: Skip | None = None) -> Iterator[PendingJob]:
    """The jobs of tenants' queues (``Waiting.queues``) in the order of their common key,
    but those that ``skip`` passes over (as in ``fair_merge``)."""
    if skip is None:
        if len(queues) == 1:
            (queue,) = queues.values()
            return map(_job_of, queue)
        return map(_job_of, heapq.merge(*queues.values()))
    return _merged_skipping(queues, skip)


def _merged_skipping(queues: Mapping[str, Sequence[Entry]], skip: Skip) -> Iterator[PendingJob]:
    if len(queues) == 1:
        ((tenant, queue),) = queues.items()
        i = 0
        while i < len(queue):
            yield queue[i][2]
            i = skip(tenant, queue, i + 1)
        return
    # Each tenant's next job on a heap (entries never tie: their ids differ).
    heap = [(queue[0], tenant) for tenant, queue in queues.items()]
    heapq.heapify(heap)
    at = dict.fromkeys(queues, 0)
    while heap:
        entry, tenant = heap[0]
        yield entry[2]
        queue = queues[tenant]
        i = skip(tenant, queue, at[tenant] + 1)
        if i < len(queue):
            at[tenant] = i
            heapq.heapreplace(heap, (queue[i], tenant))
        else:
            heapq.heappop(heap)


def fair_order(
    pending: Iterable[PendingJob],
    tracker: ShareTracker,
    level: Level = _no_level,
    due: Due | None = None,
) -> Iterator[PendingJob]:
    """Jobs in fair-share order; read ``tracker`` lazily, so update it before asking for more."""
    queues = Waiting.fresh(tuple(pending), queue_key(level, due)).queues
    return fair_merge(queues, tracker, due)


def fair_merge(
    queues: Mapping[str, Sequence[Entry]],
    tracker: ShareTracker,
    due: Due | None = None,
    skip: Skip | None = None,
) -> Iterator[PendingJob]:
    """``fair_order`` of tenants' queues already in order (``Waiting.queues``); they are
    read, not changed.  ``skip``: asked where a tenant's next job is once the one before
    is decided, it passes over the jobs that need no turn (``core._Stop.skip``: jobs that
    can neither start nor change anything); those are not yielded, and cost no trip
    through the heap, which a tenant's turn would."""
    # A job's place among the tenants' next jobs, read off its queue key (``queue_key``):
    # (not nominated, -priority, the tenant's standing, then when, submitted at, seq and id,
    # the key's last four with ``due``; without it, when is the submission time and the
    # key's last three say the same).  Its tenant last, for equal keys.
    tail = 4 if due is not None else 3
    heap: list[tuple[bool, int, float, tuple[Any, ...], str]] = []
    for tenant, queue in queues.items():
        k = queue[0][0]
        heap.append((k[0], k[1], tracker.ratio(tenant), k[-tail:], tenant))
    heapq.heapify(heap)
    at = dict.fromkeys(queues, 0)  # each tenant's next job
    ratio, replace = tracker.ratio, heapq.heapreplace  # (this loop runs for every job)
    while heap:
        tenant = heap[0][-1]  # (stays on the heap while its job is decided: one sift, not two)
        queue, i = queues[tenant], at[tenant]
        yield queue[i][2]
        i = i + 1 if skip is None else skip(tenant, queue, i + 1)
        if i < len(queue):
            at[tenant] = i
            k = queue[i][0]
            replace(heap, (k[0], k[1], ratio(tenant), k[-tail:], tenant))
        else:
            heapq.heappop(heap)


def _job_of(entry: Entry) -> PendingJob:
    return entry[2]
