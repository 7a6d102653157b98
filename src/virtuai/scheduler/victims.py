"""Choosing victims: the fewest jobs, then the lowest priority, then the youngest.

Candidates come in rank order (``victim_rank``: lowest priority, then youngest).  First each
candidate alone is tried, in rank (one victim is the fewest); else candidates
are added in rank until the job fits, and then each victim, last chosen first,
is given back if the job still fits without it (Kueue's fill-back), so no
victim could be spared.

Trials are costly (a gang's placement touches many nodes), so the search
counts instead of trying wherever it can: ``Cluster.shortfall`` says how many
tasks did not fit, and ``VictimSearch.gain`` how many more fit once a victim's
room is free (exact for tasks of one shape); a trial is made only when the
count says it can succeed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain

from virtuai.domain.resources import Resources
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.backfill import Board
from virtuai.scheduler.holds import tasks_fitting
from virtuai.scheduler.quota import Charge, Entry, Group, QuotaLedger
from virtuai.scheduler.snapshot import PendingJob, RunningJob

__all__ = ["SINGLE_TRIALS", "Candidate", "Fit", "Rank", "VictimSearch", "victim_rank"]

Rank = tuple[int, int, int, float, int, int, tuple[int, ...]]


def victim_rank(job: RunningJob, level: int = 0, size: int = 0) -> Rank:
    """Lowest priority first, then (least attained service on) the highest LAS level and the
    smallest ``size`` (its GPUs, with LAS: a small job loses less when stopped), then the
    youngest: latest start, then latest ``seq``.

    Jobs started in the same instant (one tick starts many) without a ``seq``
    fall back on the id, the greatest first and a longer one before a shorter
    one, so that numeric ids ("9" < "10") count as submission order too.  (A
    ``seq`` is unique, so with one the id is never reached: it is not spelled out,
    which keeps this cheap for the thousands of running jobs of a big replay.)
    """
    return (
        job.priority,
        -level,
        size,
        -job.started_at,
        -job.seq,
        -len(job.id),
        () if job.seq else tuple(-ord(c) for c in job.id),
    )


# How many candidates are tried as the only victim before adding victims in rank.
SINGLE_TRIALS = 16


@dataclass(slots=True)
class Candidate:
    job: RunningJob
    charge: Charge
    rank: Rank  # ``victim_rank``: the first is preempted first
    total: Resources
    pools: frozenset[str]


# Where a job would run, and what it would be charged.
Fit = tuple[tuple[TaskPlacement, ...], Charge]


class VictimSearch:
    """Trials on the pass's cluster and ledger, each undone unless it is the answer."""

    def __init__(self, ledger: QuotaLedger, board: Board, max_candidates: int) -> None:
        self._ledger = ledger
        self._board = board
        self._max = max(1, max_candidates)

    def choose(
        self,
        job: PendingJob,
        candidates: Iterator[Candidate],
        groups: list[tuple[Group, int]],
        may_borrow: bool,
    ) -> tuple[list[Candidate], Fit] | None:
        """Victims for ``job`` among ``candidates`` (in rank), and its placement; or ``None``.

        On success the victims are out of the cluster and leaving in the ledger,
        and the job is placed; on failure nothing has changed.
        """
        # No candidate, no trial: most searches of a long queue find none (one priority,
        # a level not yet allowed to preempt), and a trial placement is what costs.
        first = next(candidates, None)
        if first is None:
            return None
        candidates = chain((first,), candidates)
        # Does it fit the nodes now (blocked by quota only)?  Else how many tasks are short?
        cluster = self._board.cluster
        room = self._board.try_place(job)
        if room is not None:
            self._board.release(room)
        short = 0 if room is not None else cluster.shortfall
        # One victim is the fewest: the first, in rank, that is enough alone.
        seen: list[Candidate] = []
        singles = 0
        # Tasks of the job each node holds now, counted once: a trial gives back what it
        # took, so the nodes stay as they are until victims are added below.
        fitting: dict[str, int] = {}
        for c in candidates:
            if len(seen) >= self._max:
                break  # (as many looked at as a search may, none enough alone)
            seen.append(c)
            if not self._enough(
                job, short, self._gain(job, [c], fitting=fitting)
            ) or not self._could(job, [c], may_borrow):
                continue
            self.take(c)
            fit = self.fits(job, may_borrow)
            if fit is not None:
                return [c], fit
            self.give_back(c)
            singles += 1
            if singles >= SINGLE_TRIALS or len(seen) >= self._max:
                break
        for c in candidates:
            if len(seen) >= self._max:
                break
            seen.append(c)
        if not seen or not self._could(job, seen, may_borrow):
            return None
        # Below, a trial is made only once the victims released so far gain enough tasks;
        # what they gain together never exceeds what all of them would (room only grows as
        # victims leave).  So if all of them would not gain enough, no trial would be made:
        # say so now, without releasing and taking back each victim (most failed searches).
        if not self._enough(job, short, self._gain(job, seen, fitting=fitting)):
            return None
        # Otherwise add in rank until the job fits, then give back what is not needed.  The
        # quota is counted first; victims leave the cluster only once it would be enough.
        chosen: list[Candidate] = []
        released, gained = 0, 0
        fit = None
        for c in seen:
            if c.job.tenant != job.tenant and not self._ledger.is_borrowing(c.job.tenant, groups):
                continue  # no longer borrowing after the victims chosen so far
            self._ledger.leave(c.charge)
            chosen.append(c)
            if not self._quota_ok(job, may_borrow):
                continue
            for v in chosen[released:]:
                gained += self._gain(job, [v])
                self._board.release(v.job.placements)
            released = len(chosen)
            if self._enough(job, short, gained):
                fit = self.fits(job, may_borrow)
                if fit is not None:
                    break
                short, gained = cluster.shortfall, 0
        if fit is None:
            for i in range(len(chosen) - 1, -1, -1):
                if i < released:
                    self._board.occupy(chosen[i].job.placements)
                self._ledger.unleave(chosen[i].charge)
            return None
        self._board.release(fit[0])
        before = list(chosen)
        self._fill_back(job, chosen, may_borrow)
        fit = self.fits(job, may_borrow)
        if fit is None:
            # The count of spare room missed a corner of placement (hypothesis found one):
            # take back what was returned and try each return instead, which cannot fail.
            kept = {id(c) for c in chosen}
            for c in before:
                if id(c) not in kept:
                    self.take(c)
            chosen[:] = before
            self._fill_back(job, chosen, may_borrow, count=False)
            fit = self.fits(job, may_borrow)
        assert fit is not None, "the chosen victims made room before fill-back"
        return chosen, fit

    def _fill_back(
        self, job: PendingJob, chosen: list[Candidate], may_borrow: bool, *, count: bool = True
    ) -> None:
        """Give back, last chosen first, every victim the job does not need (all are gone now).

        With ``spare`` = how many more tasks than needed fit now (counted once by
        a trial placement), a victim whose return costs fewer tasks than that is
        not needed, and one that costs more is: no trial per victim.  Without a
        count, each return is tried.
        """
        spare: int | None = None  # could not count: try each
        if count and self._board.guard is None:  # (counts ignore backfill holds: try each)
            losses = sum(self._gain(job, [c], back=True) for c in chosen)
            counter = replace(job, tasks=job.tasks + losses)
            extra = self._board.try_place(counter)
            if extra is not None:
                self._board.release(extra)  # more than the victims' room: try each
            else:
                shortfall = self._board.cluster.shortfall
                spare = None if shortfall is None else losses - shortfall
        for c in reversed(chosen[:]):
            loss = self._gain(job, [c], back=True)
            if spare is not None and loss > spare:
                continue  # needed
            self.give_back(c)
            if not self._quota_ok(job, may_borrow):
                self.take(c)
                continue
            if spare is not None:
                spare -= loss
                chosen.remove(c)
                continue
            trial = self.fits(job, may_borrow)
            if trial is None:
                self.take(c)
            else:
                self._board.release(trial[0])
                chosen.remove(c)

    def _gain(
        self,
        job: PendingJob,
        gone: Sequence[Candidate],
        *,
        back: bool = False,
        fitting: dict[str, int] | None = None,
    ) -> int:
        """How many more tasks of ``job`` the nodes hold once ``gone`` leave (cheap, exact
        but for backfill holds); ``back``: how many fewer once ``gone``, now away, return.
        ``fitting``: the tasks each node holds now, kept across calls while the nodes do
        not change."""
        cluster = self._board.cluster
        need = job.per_task
        freed: dict[str, list[int]] = {}
        for c in gone:
            for p in c.job.placements:
                room = freed.setdefault(p.node, [0, 0, 0])
                room[0] += p.resources.cpu_milli
                room[1] += p.resources.memory
                room[2] += p.resources.gpu
        sign = -1 if back else 1
        gain = 0
        for name, (cpu, memory, gpu) in freed.items():
            node = cluster.node(name)
            if job.pool is not None and node.pool != job.pool:
                continue
            gpus = min(node.gpu_budget, len(node.free_gpus))
            now = fitting.get(name) if fitting is not None else None
            if now is None:
                now = tasks_fitting((node.cpu, node.memory, gpus), need)
                if fitting is not None:
                    fitting[name] = now
            then = tasks_fitting(
                (node.cpu + sign * cpu, node.memory + sign * memory, gpus + sign * gpu), need
            )
            gain += (then - now) * sign
        return gain

    @staticmethod
    def _enough(job: PendingJob, short: int | None, gained: int) -> bool:
        """Whether the tasks gained could cover what was short (always, if it fit already).

        ``short`` is ``Cluster.shortfall`` of the last failed attempt (``None``:
        unknown, so any gain may be enough).
        """
        if short == 0:
            return True
        return gained >= (1 if short is None else short)

    def _could(self, job: PendingJob, victims: Sequence[Candidate], may_borrow: bool) -> bool:
        """A cheap necessary condition: with ``victims`` gone, enough free room and quota.

        Arithmetic only (totals over the job's pool, and the ledger's future view),
        so that hopeless jobs are turned down without touching the cluster.
        """
        free = self._board.cluster.free_total(job.pool)
        combined: dict[int, tuple[Entry, list[int]]] = {}
        for c in victims:
            if job.pool is None or job.pool in c.pools:
                free = free + c.total
            for entry, *amounts in c.charge:
                sums = combined.setdefault(id(entry), (entry, [0, 0, 0]))[1]
                sums[0] += amounts[0]
                sums[1] += amounts[1]
                sums[2] += amounts[2]
        if not job.total.fits_in(free):
            return False
        charge: Charge = tuple((e, a[0], a[1], a[2]) for e, a in combined.values())
        self._ledger.leave(charge)
        ok = self._quota_ok(job, may_borrow)
        self._ledger.unleave(charge)
        return ok

    def _quota_ok(self, job: PendingJob, may_borrow: bool) -> bool:
        charge = self._ledger.charge_of_job(job)
        return self._ledger.blocked_reason(charge, future=True, may_borrow=may_borrow) is None

    def take(self, c: Candidate) -> None:
        self._board.release(c.job.placements)
        self._ledger.leave(c.charge)

    def give_back(self, c: Candidate) -> None:
        self._board.occupy(c.job.placements)
        self._ledger.unleave(c.charge)

    def fits(self, job: PendingJob, may_borrow: bool) -> Fit | None:
        """Place ``job`` in the future view and check its quota there; placements are kept."""
        placed = self._board.try_place(job)
        if placed is None:
            return None
        charge = self._ledger.charge_of_placements(job.tenant, placed)
        if self._ledger.blocked_reason(charge, future=True, may_borrow=may_borrow) is not None:
            self._board.release(placed)
            return None
        return placed, charge
