"""Running jobs' expected ends in end order, kept from one pass to the next (backfill's input).

A backfill reservation replays the running jobs' ends in time order until the
blocked head fits (``backfill.reserve``).  Building that order from
``Snapshot.running`` every pass is O(running jobs) in Python, and on a big
cluster (thousands of 1-GPU jobs running at once) it was the largest cost of a
pass.  ``Ends.take`` keeps the last pass's order and brings it up to date by
object identity: the running jobs that are not the very same objects as last
time (found at C speed with a set difference over ``id``\\ s) are removed or
inserted (bisect), so a caller that passes the same ``RunningJob`` objects
while they are unchanged (the simulator; a control plane that caches them)
pays only for what changed.  The objects of the last pass are referenced until
the next update, so an ``id`` cannot be reused in between.

Ties between equal ends are in no defined order: ``reserve`` takes every end of
one instant together, so the order of ties cannot change a reservation.

One thread at a time holds the kept order (the others build their own), from
``take`` to ``done``; a pass that fails does not hand it back.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Collection, Iterator, Sequence
from typing import ClassVar

from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.keeper import Keeper, Kept, since
from virtuai.scheduler.snapshot import RunningJob

__all__ = ["Ends"]


class Ends(Kept):
    """The expected ends of the running jobs that will release something, in time order."""

    _keeper: ClassVar[Keeper[Ends]] = Keeper()

    def __init__(self) -> None:
        self._running: Sequence[RunningJob] | None = None
        self._jobs: dict[int, RunningJob] = {}  # id() -> job, of the last ``running``
        self._keys: list[tuple[float, int]] = []  # (expected end, id()) of those that release

    @classmethod
    def take(cls, running: Sequence[RunningJob]) -> Ends:
        """The order for ``running``: the kept one brought up to date if this thread may
        take it, else a new one.  Hand it back with ``done()``."""
        held, kept = cls._keeper.take()
        if kept is None:
            kept = cls()
        kept._shared = held
        kept._update(running)
        return kept

    def _update(self, running: Sequence[RunningJob]) -> None:
        if running is self._running:
            return
        old = self._jobs
        diff = since(running, old)
        keys = self._keys
        if diff.mostly_new:  # one sort, not as many insertions
            keys = [
                (job.expected_end, k)
                for k, job in diff.now.items()
                if job.expected_end is not None and not job.preempting
            ]
            keys.sort()
        else:
            for k in diff.gone:
                job = old[k]
                if job.expected_end is not None and not job.preempting:
                    del keys[bisect_left(keys, (job.expected_end, k))]
            for k in diff.added:
                job = diff.now[k]
                if job.expected_end is not None and not job.preempting:
                    insort(keys, (job.expected_end, k))
        self._keys = keys
        self._jobs = diff.now
        self._running = running

    def releases(
        self, skip: Collection[str] = ()
    ) -> Iterator[tuple[float, tuple[TaskPlacement, ...]]]:
        """(expected end, placements) of the running jobs in end order, but those in ``skip``
        (ids) and jobs already preempting, which release to their preemptor only."""
        jobs = self._jobs
        for end, k in self._keys:
            job = jobs[k]
            if job.id not in skip:
                yield end, job.placements
