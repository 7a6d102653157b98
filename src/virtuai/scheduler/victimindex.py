"""Running jobs as possible victims, per tenant in rank order, kept from one pass to the next.

Ranking every running job at every pass was the largest cost of a pass with preemption
on a big cluster: a replay of 1,000 nodes has thousands of jobs running at once, and a
pass that searches victims needs them all in rank order (``victims.victim_rank``).  A
job's rank changes only when its least-attained-service level does, so the index is
kept between passes and brought up to date with what changed since:

- jobs gone, and jobs new: by object, so a job is the same job for as long as the caller
  keeps its ``RunningJob`` (the simulator keeps it while the job runs; the server builds
  new objects each pass, and so ranks and sorts everything anew, as before).  A caller
  that also says which objects came and went (``Snapshot.running_since``, the
  simulator) spares the comparison of thousands of running jobs every pass;
- jobs whose attained service crossed a level boundary: each ranked job's crossing time
  is in a heap, checked against the exact level when it comes.

One pass at a time holds the kept index (``take`` ... ``done``); a pass on another thread
meanwhile builds its own.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from virtuai.domain.resources import Resources
from virtuai.scheduler.keeper import Keeper, Kept
from virtuai.scheduler.las import gpu_weight, running_level
from virtuai.scheduler.snapshot import Policy, RunningJob
from virtuai.scheduler.victims import Rank, victim_rank

__all__ = ["RunningSince", "Standing", "VictimIndex", "standing"]

# ``Snapshot.running_since``: the last pass's running jobs, those gone and those added.
RunningSince = tuple[Sequence[RunningJob], Sequence[RunningJob], Sequence[RunningJob]]

# How early a level crossing is looked at again: its time is a float estimate, and the
# exact level (``las.running_level``) decides.  Far above rounding, far below a tick.
_EARLY_S = 1e-3


@dataclass(frozen=True, slots=True)
class Standing:
    """A running job as a victim: its rank at its current level, and what it holds."""

    job: RunningJob
    rank: Rank
    total: Resources
    pools: frozenset[str]


def standing(
    job: RunningJob, now: float, policy: Policy, pool_of: dict[str, str]
) -> tuple[Standing, float]:
    """``job``'s standing at ``now``, and when its level ends (``math.inf``: never)."""
    total = job.total
    thresholds = policy.las_thresholds_gpu_s
    ends = math.inf
    if thresholds:
        level = running_level(job, now, policy)
        rate = gpu_weight(total.gpu, total.cpu_milli)
        if level < len(thresholds) and rate > 0:
            ends = job.started_at + (thresholds[level] - job.attained_gpu_s) / rate
        rank = victim_rank(job, level, total.gpu)
    else:
        rank = victim_rank(job)
    pools = frozenset(pool_of.get(p.node, "") for p in job.placements)
    return Standing(job, rank, total, pools), ends


class VictimIndex(Kept):
    """Preemptible running jobs that are not stopping yet, per tenant in rank order."""

    _keeper: ClassVar[Keeper[VictimIndex]] = Keeper()

    def __init__(self, pool_of: dict[str, str], policy: Policy) -> None:
        self._pool_of = pool_of
        self._policy = policy
        self._now = -math.inf
        self._by_id: dict[int, Standing] = {}  # id(job): the job's object is held, so unique
        self._running: Sequence[RunningJob] | None = None  # of the last update
        # Running jobs told to stop for a pending job (``preempted_for``), by id(): not
        # victims, but what their preemptors wait for (``Preemptor``).
        self.stopping: dict[int, RunningJob] = {}
        self.lists: dict[str, list[Standing]] = {}
        self.ranks: dict[str, list[Rank]] = {}  # the lists' ranks, for bisect
        self._crossings: list[tuple[float, int, Standing]] = []  # heap: when a level ends
        self._order = itertools.count()

    @classmethod
    def take(
        cls,
        running: Sequence[RunningJob],
        now: float,
        policy: Policy,
        pool_of: dict[str, str],
        since: RunningSince | None = None,
    ) -> VictimIndex:
        """The index of ``running`` at ``now``: the kept one brought up to date when this
        thread may take it and it was built for the same pools and levels, else a new one.
        Hand it back with ``done()``.  ``since``: ``Snapshot.running_since``."""
        held, kept = cls._keeper.take()
        if (
            kept is None
            or kept._pool_of is not pool_of
            or kept._policy.las_thresholds_gpu_s != policy.las_thresholds_gpu_s
            or now < kept._now  # levels only rise with time: a clock stepped back re-ranks
        ):
            kept = cls(pool_of, policy)
        kept._policy = policy
        kept._shared = held
        try:
            if since is not None and since[0] is kept._running:
                kept._apply(since[1], since[2], now)
            else:
                kept._update(running, now)
            kept._cross(now)
            kept._running = running
        except BaseException:
            if held:
                kept._shared = False
                cls._keeper.keep(None)  # half brought up to date: not kept
            raise
        return kept

    def _update(self, running: Sequence[RunningJob], now: float) -> None:
        self._now = now
        current = {id(j): j for j in running if j.preemptible and not j.preempting}
        self.stopping = {id(j): j for j in running if j.preempting and j.preempted_for is not None}
        by_id = self._by_id
        gone = by_id.keys() - current.keys()
        new = current.keys() - by_id.keys()
        if 2 * (len(gone) + len(new)) > len(current):
            self._rebuild(current.values(), now)  # mostly other objects: sort once
            return
        for k in gone:
            self._remove(by_id.pop(k))
        for k in new:
            self._add(current[k], now)

    def _apply(self, gone: Sequence[RunningJob], added: Sequence[RunningJob], now: float) -> None:
        """Bring the index of the last ``running`` to the running jobs without ``gone``
        and with ``added`` (as the caller vouches)."""
        self._now = now
        by_id = self._by_id
        stopping = self.stopping
        for job in gone:
            s = by_id.pop(id(job), None)  # (not there: it could not be preempted)
            if s is not None:
                self._remove(s)
            stopping.pop(id(job), None)
        for job in added:
            if job.preemptible and not job.preempting:
                self._add(job, now)
            elif job.preempting and job.preempted_for is not None:
                stopping[id(job)] = job

    def _cross(self, now: float) -> None:
        """Rank anew the jobs whose level ended by ``now``."""
        by_id = self._by_id
        crossings, again = self._crossings, []
        while crossings and crossings[0][0] - _EARLY_S <= now:
            entry = heapq.heappop(crossings)
            old = entry[2]
            if by_id.get(id(old.job)) is not old:
                continue  # gone, or ranked anew since
            fresh, _ = standing(old.job, now, self._policy, self._pool_of)
            if fresh.rank == old.rank:
                again.append(entry)  # not crossed yet (the estimate was early)
                continue
            self._remove(by_id.pop(id(old.job)))
            self._add(old.job, now)
        for entry in again:
            heapq.heappush(crossings, entry)
        if len(crossings) > 2 * len(by_id) + 64:  # mostly jobs gone before their crossing
            self._crossings = [e for e in crossings if by_id.get(id(e[2].job)) is e[2]]
            heapq.heapify(self._crossings)

    def _rebuild(self, jobs: Iterable[RunningJob], now: float) -> None:
        self._by_id, self.lists, self.ranks, self._crossings = {}, {}, {}, []
        for job in jobs:
            s, ends = standing(job, now, self._policy, self._pool_of)
            self._by_id[id(job)] = s
            self.lists.setdefault(job.tenant, []).append(s)
            if ends < math.inf:
                self._crossings.append((ends, next(self._order), s))
        heapq.heapify(self._crossings)
        for tenant, items in self.lists.items():
            items.sort(key=lambda s: s.rank)
            self.ranks[tenant] = [s.rank for s in items]

    def _add(self, job: RunningJob, now: float) -> None:
        s, ends = standing(job, now, self._policy, self._pool_of)
        self._by_id[id(job)] = s
        ranks = self.ranks.setdefault(job.tenant, [])
        i = bisect_left(ranks, s.rank)
        ranks.insert(i, s.rank)
        self.lists.setdefault(job.tenant, []).insert(i, s)
        if ends < math.inf:
            heapq.heappush(self._crossings, (ends, next(self._order), s))

    def _remove(self, s: Standing) -> None:
        tenant = s.job.tenant
        ranks, items = self.ranks[tenant], self.lists[tenant]
        i = bisect_left(ranks, s.rank)
        while items[i] is not s:  # (equal ranks: only jobs without a seq and one id)
            i += 1
        del ranks[i], items[i]
        if not items:
            del self.ranks[tenant], self.lists[tenant]
