"""The pending jobs per tenant in queue order, and counted by shape, kept from one pass to the next.

A pass reads the queue in order but, with ``Policy.report_blocked`` off (the
simulator), stops soon after its last admission: a few dozen jobs of a queue of
hundreds.  Yet ordering the whole queue, and counting it by shape for that early
stop (``core._Stop``), cost O(queue) in Python every pass: on a 100,000-job replay,
more than the decisions themselves.  ``Waiting.take`` keeps the last pass's queues
and counts and brings them up to date by object identity, as ``ends.Ends`` does for
the running jobs: the pending jobs that are not the very same objects as last time
(found at C speed with a set difference over ``id``\\ s) are removed or inserted
(bisect).  A caller that passes the same ``PendingJob`` objects while they wait (the
simulator) pays only for what changed; one that builds new objects every pass (the
control plane) sorts and counts as before.  A caller that also says what changed
(``Snapshot.pending_since``, the simulator) spares the comparison of the whole queue.
The objects of the last pass are referenced until the next update, so an ``id`` cannot
be reused in between.

An order is kept if its key depends on nothing but the job's object, or if the
caller names the jobs whose key may also depend on the time (``take``'s ``moves``):
a least-attained-service level changes with time only for a job that has attained
service already (a preempted one: the starvation guard may bring it back to level 0),
so those few are keyed anew every pass and moved if their key changed.  Each job's
key is kept beside it, so that a moved job is found where its old key put it.

One thread at a time holds the kept queues (the others build their own), from
``take`` to ``done``; a pass that fails does not hand them back.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from virtuai.scheduler.backfill import Shape, shape_of
from virtuai.scheduler.keeper import Keeper, Kept, since
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["Entry", "Key", "ShapeQueue", "Since", "Waiting", "time_limit"]

# (sort key, id() of the job, the job): the id only separates two jobs of equal keys
# (the same job id twice, which no caller sends), so that the job is never compared.
Entry = tuple[tuple[Any, ...], int, PendingJob]
Key = Callable[[PendingJob], tuple[Any, ...]]
Since = tuple[Sequence[PendingJob], Sequence[PendingJob], Sequence[PendingJob]]


def time_limit(job: PendingJob) -> float:
    """The job's time limit as the early stop counts it (``math.inf``: none)."""
    return math.inf if job.walltime_s is None else float(job.walltime_s)


class ShapeQueue:
    """One tenant's waiting jobs of one shape, in queue order: all of them, and apart per
    time limit (``Waiting.shape_queues``).  The entries are the tenant queue's own."""

    __slots__ = ("by_limit", "entries", "limits")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.by_limit: dict[float, list[Entry]] = {}
        self.limits: list[float] = []  # ascending: the keys of ``by_limit``

    def add(self, entry: Entry, limit: float) -> None:
        insort(self.entries, entry)
        same = self.by_limit.get(limit)
        if same is None:
            same = self.by_limit[limit] = []
            insort(self.limits, limit)
        insort(same, entry)

    def remove(self, entry: tuple[tuple[Any, ...], int], limit: float) -> None:
        """Remove the entry that begins with ``entry`` (key and id)."""
        entries = self.entries
        del entries[bisect_left(entries, entry)]
        same = self.by_limit[limit]
        del same[bisect_left(same, entry)]
        if not same:
            del self.by_limit[limit]
            del self.limits[bisect_left(self.limits, limit)]


class Waiting(Kept):
    """The pending jobs of a pass: per tenant in queue order, and counted by shape."""

    _keeper: ClassVar[Keeper[Waiting]] = Keeper()

    def __init__(self, key: Key, kind: object) -> None:
        self._key = key
        self._kind = kind  # what the key is (equal kinds: equal keys), None: not kept
        self._moves: Callable[[PendingJob], bool] | None = None  # ``take``'s
        self._keys: dict[int, tuple[Any, ...]] = {}  # id() -> the key the job is queued by
        self._moving: dict[int, PendingJob] = {}  # id() -> job whose key may change
        self._pending: Sequence[PendingJob] | None = None
        self._jobs: dict[int, PendingJob] = {}  # id() -> job, of the last ``pending``
        # Per tenant, ascending: the tenant's queue.
        self.queues: dict[str, list[Entry]] = {}
        # Per ``backfill.shape_of``: how many jobs wait with each time limit, and in all.
        self.by_shape: dict[Shape, dict[float, int]] = {}
        self.shape_count: dict[Shape, int] = {}
        # Jobs that target nodes or hold fixed ports (shapes do not say all about them).
        self.targeted = 0
        # Per tenant and shape, those jobs in queue order (``shape_queues``): built when
        # first asked for, then kept up to date with the queues.
        self._shape_queues: dict[str, dict[Shape, ShapeQueue]] | None = None

    @classmethod
    def take(
        cls,
        pending: Sequence[PendingJob],
        key: Key,
        kind: object,
        since: Since | None = None,
        moves: Callable[[PendingJob], bool] | None = None,
    ) -> Waiting:
        """The queues of ``pending`` in the order of ``key`` (whose results depend on
        nothing but the job's object, the same for every key of the same ``kind``, except
        for the jobs for which ``moves`` is true: their key may change from one pass to the
        next, and they are keyed anew): the kept ones brought up to date if this thread
        may take them, else new ones.  Hand them back with ``done()``.  ``since``:
        ``Snapshot.pending_since``."""
        held, kept = cls._keeper.take()
        if kept is None or kept._kind != kind:
            kept = cls(key, kind)
        kept._shared = held
        kept._key, kept._moves = key, moves
        if since is not None and since[0] is kept._pending and kept._kind is not None:
            kept._apply(pending, since[1], since[2])
        else:
            kept._update(pending)
        kept._move()
        return kept

    @classmethod
    def fresh(cls, pending: Sequence[PendingJob], key: Key) -> Waiting:
        """The queues of ``pending`` in the order of ``key``, built for this pass alone."""
        waiting = cls(key, None)
        waiting._update(pending)
        return waiting

    def top_priorities(self) -> dict[str, int]:
        """Each tenant's highest priority among its pending jobs (read off the queues' heads:
        nominated jobs first, then by priority)."""
        top: dict[str, int] = {}
        for tenant, queue in self.queues.items():
            for _, _, job in queue:
                top[tenant] = max(top.get(tenant, job.priority), job.priority)
                if not job.nominated:
                    break
        return top

    def shape_queues(self, tenant: str) -> dict[Shape, ShapeQueue]:
        """``tenant``'s waiting jobs per shape (``backfill.shape_of``), each in queue order:
        where a tenant's next job of a shape, or of a shape and time limit, is in its queue,
        without a walk of the jobs in between (``core._Stop.skip``).  Read only."""
        index = self._shape_queues
        if index is None:
            index = self._shape_queues = {}
            for queue in self.queues.values():
                for entry in queue:
                    self._index(index, entry)
        return index.get(tenant, {})

    @staticmethod
    def _index(index: dict[str, dict[Shape, ShapeQueue]], entry: Entry) -> None:
        job = entry[2]
        shapes = index.setdefault(job.tenant, {})
        shape = shape_of(job)
        queue = shapes.get(shape)
        if queue is None:
            queue = shapes[shape] = ShapeQueue()
        queue.add(entry, time_limit(job))

    def __len__(self) -> int:
        return sum(self.shape_count.values())

    def _update(self, pending: Sequence[PendingJob]) -> None:
        if pending is self._pending:
            return
        old = self._jobs
        diff = since(pending, old)
        if len(diff.now) < len(pending):
            # One object twice (no caller does that): each counts, as in a sort of them,
            # and these queues cannot be updated by identity: not kept for the next pass.
            self._rebuild(pending)
            self._kind = None
        elif diff.mostly_new:
            self._rebuild(pending)  # (one sort per tenant, not as many insertions)
        else:
            for k in diff.gone:
                self._remove(old[k])
            for k in sorted(diff.added):  # (any order gives the same queues; no set order)
                self._insert(diff.now[k])
        self._jobs = diff.now
        self._pending = pending

    def _apply(
        self,
        pending: Sequence[PendingJob],
        gone: Sequence[PendingJob],
        added: Sequence[PendingJob],
    ) -> None:
        """Bring the queues of the last ``pending`` to ``pending``, which is that without
        ``gone`` and with ``added`` (as the caller vouches)."""
        jobs = self._jobs
        for job in gone:
            del jobs[id(job)]
            self._remove(job)
        for job in added:
            jobs[id(job)] = job
            self._insert(job)
        self._pending = pending

    def _rebuild(self, pending: Sequence[PendingJob]) -> None:
        key, moves, keys = self._key, self._moves, {}
        self.queues = {}
        self.by_shape = {}
        self.shape_count = {}
        self.targeted = 0
        self._moving = {}
        self._shape_queues = None
        for job in pending:
            k = keys[id(job)] = key(job)
            self.queues.setdefault(job.tenant, []).append((k, id(job), job))
            self._count(job, 1)
            if moves is not None and moves(job):
                self._moving[id(job)] = job
        self._keys = keys
        for queue in self.queues.values():
            queue.sort()

    def _insert(self, job: PendingJob) -> None:
        k = self._keys[id(job)] = self._key(job)
        entry = (k, id(job), job)
        insort(self.queues.setdefault(job.tenant, []), entry)
        self._count(job, 1)
        if self._shape_queues is not None:
            self._index(self._shape_queues, entry)
        if self._moves is not None and self._moves(job):
            self._moving[id(job)] = job

    def _remove(self, job: PendingJob) -> None:
        queue = self.queues[job.tenant]
        entry = (self._keys.pop(id(job)), id(job))
        del queue[bisect_left(queue, entry)]
        if not queue:
            del self.queues[job.tenant]
        self._count(job, -1)
        if self._shape_queues is not None:
            shapes = self._shape_queues[job.tenant]
            shape = shape_of(job)
            shapes[shape].remove(entry, time_limit(job))
            if not shapes[shape].entries:
                del shapes[shape]
                if not shapes:
                    del self._shape_queues[job.tenant]
        self._moving.pop(id(job), None)

    def _move(self) -> None:
        """Key anew the jobs whose key may have changed, and move those whose did."""
        for job in list(self._moving.values()):
            if self._key(job) != self._keys[id(job)]:
                self._remove(job)
                self._insert(job)

    def _count(self, job: PendingJob, step: int) -> None:
        shape = shape_of(job)
        times = self.by_shape.setdefault(shape, {})
        limit = time_limit(job)
        left = times.get(limit, 0) + step
        if left:
            times[limit] = left
        else:
            del times[limit]
        left = self.shape_count.get(shape, 0) + step
        if left:
            self.shape_count[shape] = left
        else:
            del self.shape_count[shape], self.by_shape[shape]
        if job.allowed_nodes is not None or job.host_ports:
            self.targeted += step
