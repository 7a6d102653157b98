"""Preemption: whom to stop so that a blocked job can start, and what stays promised meanwhile.

Who may be a victim (``Policy.preemption``), never a job already preempting:

1. *Reclaim*: a job whose tenant fits within its nominal quota may preempt
   jobs of cohort-mates that borrow (hold more than their nominal quota, in the
   future view) in a cohort pool where the job asks for something, and only
   while their tenant still borrows.  Jobs that cannot be preempted never
   borrow (``QuotaLedger.blocked_reason(may_borrow=False)``), so what is lent can
   always be taken back.
2. *Priority*: preemptible jobs of the job's own tenant with a strictly lower
   priority.
3. *Attained service* (``Policy.las_thresholds_gpu_s``, ``las.py``): preemptible jobs
   of the same priority and a strictly higher LAS level, of its own tenant or of a
   tenant that stands worse in fair share (a higher usage over share) than its own,
   and holding no more GPUs than the preemptor asks for (a big gang is not thrown
   back for a small job: the rest of its room would go to others and it would
   wait long to get it all back; except, with ``Policy.gang_victim_ratio``, a gang
   on several nodes of a tenant whose fair-share ratio is above that bound: a burst
   of wide gangs beyond the tenant's share, whose room beyond the preemptor's goes
   to the next blocked jobs of the pass as spare room), and only once the preemptor
   itself has waited ``min_run_s``.  At most ``LAS_SEARCHES`` such searches fail
   per pass; after that only priority and reclaim preemptions are tried, so a long
   queue does not make every pass search victims for every job.

And never a job that has run less than ``Policy.min_run_s`` in its current
attempt, nor any job whose preemption ever stopped the preemptor
(``PendingJob.preempted_by``): every preemption buys some progress, and two jobs
never evict each other back and forth.

Which victims: to lose the least work, the fewest jobs, then the lowest
priority, then the youngest (``victims.py`` says how they are searched).
At most ``Policy.max_victim_candidates`` candidates are looked at per job.

Victims free their resources only once they have stopped (the control plane
gives them a grace period), so the preemptor is not admitted in this pass.  Its
future placement and quota are *promised* to it: the cluster keeps, on every
node involved, the larger of what the victims hold now and what the preemptor
will hold (``Holds``), and the ledger charges the preemptor while counting the
victims as leaving.  Later jobs of the pass thus can neither take the room nor
overrun a quota; later preemptors may use room a victim frees beyond its
preemptor's needs (``Holds`` calls it *spare*) before preempting anyone else.
A preemptor whose victims are still stopping (``RunningJob.preempted_for``) waits
for them and preempts nobody else.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.backfill import Board
from virtuai.scheduler.fairshare import ShareTracker
from virtuai.scheduler.holds import Holds
from virtuai.scheduler.las import pending_level
from virtuai.scheduler.quota import Charge, Group, QuotaLedger
from virtuai.scheduler.snapshot import PendingJob, Policy, Preemption, RunningJob
from virtuai.scheduler.victimindex import RunningSince, Standing, VictimIndex, standing
from virtuai.scheduler.victims import Candidate, Fit, VictimSearch

__all__ = ["LAS_SEARCHES", "Outcome", "Preemptor"]

LAS_SEARCHES = 16


@dataclass(frozen=True, slots=True)
class Outcome:
    """A preemption decided for one pending job (``preempted`` may be empty: spare room)."""

    preempted: tuple[Preemption, ...]
    placements: tuple[TaskPlacement, ...]
    charge: Charge


class Preemptor:
    """Chooses victims for blocked jobs during one pass (see the module docstring)."""

    def __init__(
        self,
        running: Sequence[RunningJob],
        ledger: QuotaLedger,
        board: Board,
        pool_of: dict[str, str],
        cohort_of: dict[str, str | None],
        *,
        policy: Policy,
        now: float,
        tracker: ShareTracker | None = None,
        running_since: RunningSince | None = None,
    ) -> None:
        max_candidates = policy.max_victim_candidates
        self._policy = policy
        self._now = now
        self._tracker = tracker
        self._las = bool(policy.las_thresholds_gpu_s)
        self._las_failed = 0  # failed searches that may take LAS victims, this pass
        self._ledger = ledger
        self._board = board
        self._cohort_of = cohort_of
        self._search = VictimSearch(ledger, board, max_candidates)
        self.holds = Holds(board, pool_of)
        self._pool_of = pool_of
        self._running = running
        self._running_since = running_since
        self._victims: VictimIndex | None = None  # ``_index``
        self._made: dict[str, Candidate] = {}  # ``_of``'s, by job id
        if running_since is not None:
            self._index()  # kept up to date from what changed alone, every pass: cheap
        self._start: dict[str, int] = {}  # per tenant: candidates before it are all taken
        self._stopping: dict[str, list[Candidate]] = {}
        self._cohorts: dict[str, list[str]] = {}
        self._taken: set[str] = set()
        self._failed: set[tuple[object, ...]] = set()
        self._reclaiming: set[str] = set()  # tenants reclaimed from in the last search
        told = (
            self._victims.stopping.values()
            if self._victims is not None
            else (j for j in running if j.preempting and j.preempted_for is not None)
        )
        for job in told:
            assert job.preempted_for is not None
            self._stopping.setdefault(job.preempted_for, []).append(self._candidate(job))
        for tenant, cohort in sorted(cohort_of.items()):
            if cohort is not None:
                self._cohorts.setdefault(cohort, []).append(tenant)

    def _candidate(self, job: RunningJob) -> Candidate:
        return self._of(standing(job, self._now, self._policy, self._pool_of)[0])

    def _of(self, s: Standing) -> Candidate:
        """``s`` as a candidate; made once per pass (a pass may search victims for dozens of
        jobs, each walking the same running jobs in rank)."""
        job = s.job
        made = self._made.get(job.id)
        if made is None or made.job is not job:
            charge = self._ledger.charge_of_placements(job.tenant, job.placements)
            made = self._made[job.id] = Candidate(job, charge, s.rank, s.total, s.pools)
        return made

    def _index(self) -> VictimIndex:
        """Every running job that may be preempted, per tenant in rank order (taken at the
        first search of the pass: a pass that searches no victims does not rank them;
        with ``Snapshot.running_since``, at the start of every pass)."""
        if self._victims is None:
            self._victims = VictimIndex.take(
                self._running, self._now, self._policy, self._pool_of, self._running_since
            )
        return self._victims

    def done(self) -> None:
        """The pass is over: the victim index is kept for the next one."""
        if self._victims is not None:
            self._victims.done()

    @property
    def las_searches_left(self) -> bool:
        """Whether a failed search may still take attained-service victims in this pass."""
        return self._las_failed < LAS_SEARCHES

    @property
    def taken(self) -> frozenset[str]:
        """Running jobs chosen as victims in this pass (their room is promised)."""
        return frozenset(self._taken)

    # --- preemptors whose victims are stopping -------------------------------------------

    def waiting_for(self) -> frozenset[str]:
        """The pending jobs whose victims, preempted in earlier passes, are still stopping."""
        return frozenset(self._stopping)

    def takes_lower_priority(self, top: dict[str, int]) -> bool:
        """Whether some tenant runs a preemptible job of a lower priority than ``top``'s for
        it (its highest pending priority): a victim a job may take for its priority alone,
        whatever its level and its wait."""
        ranks = self._index().ranks
        for tenant, priority in top.items():
            own = ranks.get(tenant)
            if own and own[0][0] < priority:  # (ranks go lowest priority first)
                return True
        return False

    def stopping_for(self, job: PendingJob) -> int:
        """How many jobs preempted earlier for ``job`` are still stopping."""
        return len(self._stopping.get(job.id, ()))

    def wait(self, job: PendingJob, may_borrow: bool) -> Outcome | None:
        """Promise ``job`` the room its stopping victims will free, if it fits there."""
        victims = [c for c in self._stopping.get(job.id, ()) if c.job.id not in self._taken]
        for c in victims:
            self._board.release(c.job.placements)  # the ledger counts them leaving already
        fit = self._search.fits(job, may_borrow)
        if fit is None:
            for c in reversed(victims):
                self._board.occupy(c.job.placements)
            return None
        self._commit(victims, fit, [])
        return Outcome((), *fit)

    # --- new preemptions ----------------------------------------------------------------

    def may_take_for_level(self, job: PendingJob) -> bool:
        """Whether this pass may still search attained-service victims for ``job``.

        Only for a job that waited ``min_run_s`` itself: on a lightly loaded cluster
        backfill starts it soon enough, and preempting would only cost the victim's
        restart.
        """
        return (
            self._las
            and self.las_searches_left
            and self._now - job.submitted_at >= self._policy.min_run_s
        )

    def preempt(self, job: PendingJob, may_borrow: bool, *, las: bool = True) -> Outcome | None:
        """Choose and promise victims for ``job``; ``None`` (nothing changed) if none help.
        ``las=False``: no attained-service victims for it (backfill starts it soon)."""
        r = job.per_task
        las = las and self.may_take_for_level(job)
        level = pending_level(job, self._now, self._policy) if las else -1
        key = (
            job.tenant, job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks, job.priority, level,
            job.preempted_by,
        )  # fmt: skip
        if key in self._failed:
            return None
        groups = self._ledger.reclaim_groups(self._ledger.charge_of_job(job))
        lifted = self.holds.release_spare(job)
        if lifted:
            fit = self._search.fits(job, may_borrow)
            if fit is not None:
                self._commit([], fit, lifted)
                return Outcome((), *fit)
        groups = groups or []
        candidates = self._candidates(job, groups, level)
        chosen = self._search.choose(job, candidates, groups, may_borrow)
        if chosen is None:
            self.holds.restore(lifted)
            self._failed.add(key)
            self._las_failed += las
            return None
        victims, fit = chosen
        self._commit(victims, fit, lifted)
        preempted = tuple(
            Preemption(c.job.id, job.id, self._reason(c, job, level)) for c in victims
        )
        return Outcome(preempted, *fit)

    def _candidates(
        self, job: PendingJob, groups: list[tuple[Group, int]], level: int
    ) -> Iterator[Candidate]:
        """Eligible victims in rank order (lazily: borrowing is re-checked as victims go)."""
        lists: list[Iterator[Candidate]] = []
        index = self._index()
        own_of, ranks = index.lists, index.ranks
        # Lower priority, or the same priority and a higher level (level -1: LAS is off or
        # out of searches for this pass, so only lower priorities).
        bound: tuple[int, ...] = (job.priority, -level) if level >= 0 else (job.priority,)
        if job.tenant in own_of:
            end = bisect_left(ranks[job.tenant], bound)
            lists.append(self._untaken(job.tenant, end))
        reclaim: set[str] = set()
        cohort = self._cohort_of.get(job.tenant)
        if groups and cohort is not None:
            for tenant in self._cohorts.get(cohort, ()):
                if (
                    tenant != job.tenant
                    and tenant in own_of
                    and self._ledger.is_borrowing(tenant, groups)
                ):
                    reclaim.add(tenant)
                    lists.append(self._untaken(tenant, len(own_of[tenant])))
        richer: set[str] = set()
        tracker = self._tracker
        if level >= 0 and tracker is not None:
            own = tracker.ratio(job.tenant)
            for tenant in sorted(own_of):
                if tenant != job.tenant and tenant not in reclaim and tracker.ratio(tenant) > own:
                    richer.add(tenant)
                    lists.append(self._untaken(tenant, bisect_left(ranks[tenant], bound)))
        self._reclaiming = reclaim  # (what ``_reason`` says of this search's victims)
        asks = job.total
        min_run, now = self._policy.min_run_s, self._now
        for c in heapq.merge(*lists, key=lambda c: c.rank):
            if c.job.id in self._taken or c.job.id in job.preempted_by:
                continue
            if min_run > 0 and now - c.job.started_at < min_run:
                continue  # has not run long enough since it (re)started
            same = c.rank[0] == job.priority
            if same and c.total.gpu > asks.gpu and not self._gang_victim(c):
                continue  # LAS: never a bigger job for a smaller one
            if c.job.tenant in richer:
                if not same or -c.rank[1] <= level:
                    continue  # across tenants: only for least attained service
            elif c.job.tenant != job.tenant and not self._ledger.is_borrowing(c.job.tenant, groups):
                continue
            if not (
                (asks.cpu_milli and c.total.cpu_milli)
                or (asks.memory and c.total.memory)
                or (asks.gpu and c.total.gpu)
            ):
                continue  # holds nothing the job asks for
            yield c

    def _reason(self, victim: Candidate, job: PendingJob, level: int) -> str:
        """Why ``victim`` stops for ``job`` (of LAS ``level``), in the words of the rule that
        chose it."""
        theirs = victim.job
        if theirs.tenant in self._reclaiming:
            return f"preempted to reclaim quota for tenant {job.tenant} (job {job.id})"
        if theirs.priority < job.priority:
            return (
                f"preempted for job {job.id} of tenant {job.tenant}, which has a higher "
                f"priority ({job.priority} over {theirs.priority})"
            )
        across = (
            ""
            if theirs.tenant == job.tenant
            else f"; tenant {theirs.tenant} is further above its fair share"
        )
        return (
            f"preempted for job {job.id} of tenant {job.tenant}, which has attained less "
            f"service (level {level} under {-victim.rank[1]}){across}"
        )

    def _gang_victim(self, c: Candidate) -> bool:
        """``Policy.gang_victim_ratio``: ``c`` is a gang (on several nodes) of a tenant whose
        fair-share ratio (usage over share) is above that bound, which a smaller job may
        preempt for its level."""
        bound = self._policy.gang_victim_ratio
        if bound <= 0 or self._tracker is None:
            return False
        if len({p.node for p in c.job.placements}) < 2:
            return False
        return self._tracker.ratio(c.job.tenant) > bound

    def _untaken(self, tenant: str, end: int) -> Iterator[Candidate]:
        """``tenant``'s candidates before ``end``, skipping (for good) the taken ones in front."""
        own, taken = self._index().lists[tenant], self._taken
        start = self._start.get(tenant, 0)
        while start < len(own) and own[start].job.id in taken:
            start += 1
        self._start[tenant] = start
        for i in range(start, end):
            yield self._of(own[i])

    def _commit(
        self,
        victims: Sequence[Candidate],
        fit: Fit,
        lifted: Sequence[str],
    ) -> None:
        placed, charge = fit
        self._taken.update(c.job.id for c in victims)
        self._ledger.charge(charge)
        self.holds.commit([p for c in victims for p in c.job.placements], placed, lifted)
        self._board.keep(placed, short=False)
        self._failed.clear()  # room moved: earlier failures may succeed now
