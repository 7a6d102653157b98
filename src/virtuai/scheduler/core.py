"""One scheduling pass: order the queue, then admit, preempt for, or block each job with a reason.

The rules, in the order they are applied to each job (``docs/scheduling.md``
has the long version with examples):

1. ``NEVER``: the job could not run even on idle nodes within the most quota
   its tenant could ever hold (``never.never_reason``).
   It is skipped and blocks no one.
2. ``QUOTA``: its tenant's quota (counting work admitted or promised earlier in
   this pass) has no room for it.  It waits, but does not hold up others.
   A job that would have to borrow from its cohort is put off (admission and
   preemption alike) until every job that fits within nominal quota has had
   its turn (Kueue does the same; a nominated job is not, see 5): guaranteed
   quota goes before borrowed quota, which also keeps a lender's reclaimed room
   from going straight back to the borrower it was taken from.
3. ``QUEUE``: with strict FIFO (v1, ``Policy.backfill`` off), nothing may
   overtake the first job that does not fit, so a big gang is not starved by
   a stream of small jobs.  With EASY backfill the first such job gets a
   reservation instead (``backfill``), and later jobs may start if they do
   not delay it.
4. Placement (``placement.Cluster``): all tasks or none, best fit onto devices.
5. ``PREEMPTION`` (``Policy.preemption``): a job blocked by quota or capacity may
   preempt borrowers of its cohort (if it is within its nominal quota) or
   lower-priority jobs of its own tenant (``preemption``).  It waits for them
   to stop; what they free is promised to it for the rest of the pass, and then
   it is *nominated*: first in the queue, and not put off as a borrower.
6. ``CAPACITY``: the job does not fit now; the first one is the head.

The pass is pure and deterministic: jobs are taken in a total order, nodes are
visited in name order, and no decision depends on dict or set iteration order.
"""

from __future__ import annotations

import functools
import heapq
import math
import operator
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from virtuai.domain.resources import Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.backfill import (
    Board,
    Release,
    Reservation,
    Shape,
    reserve,
    shape_of,
    starts_by,
)
from virtuai.scheduler.ends import Ends
from virtuai.scheduler.fairshare import ShareTracker, capacity_of, cluster_capacity
from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.las import pending_level
from virtuai.scheduler.never import never_reason
from virtuai.scheduler.placement import Cluster
from virtuai.scheduler.preemption import Preemptor
from virtuai.scheduler.queue import due_by, fair_merge, merged, queue_key, queue_order
from virtuai.scheduler.quota import Charge, QuotaLedger
from virtuai.scheduler.reasons import (
    NEVER_PREFIX,
    capacity_reason,
    expected_in,
    preemption_reason,
    queue_reason,
    reserved_reason,
)
from virtuai.scheduler.snapshot import (
    Admission,
    Blocked,
    BlockKind,
    Decisions,
    PendingJob,
    Policy,
    Preemption,
    Snapshot,
    TenantState,
)
from virtuai.scheduler.waiting import Entry, Waiting, time_limit

__all__ = ["queue_order", "schedule"]


def _end_of(release: Release) -> float:
    return release[0]


_Placed = tuple[tuple[TaskPlacement, ...] | None, Charge, str | None]
_MemoKey = tuple[object, ...]
_Decision = tuple[BlockKind, str, float | None]  # a blocked job's (kind, reason, expected start)
_Memo = tuple[int, PendingJob | None, _Decision | None]  # None: deferred as a borrower
# Remember blocked (and deferred) decisions per (tenant, shape) within a pass
# (``_Pass.memo``); tests turn it off to check that it changes no decision.
MEMO_BLOCKED = True


def schedule(snapshot: Snapshot) -> Decisions:
    """Decide, for every pending job, to admit it (with placements) or why it waits.

    Every job in ``snapshot.pending`` gets exactly one decision (with
    ``Policy.report_blocked`` off, only the admissions, preemptions and ``NEVER``
    ones are reported).  ``admitted`` and ``blocked`` are both in the order the jobs
    were considered;
    ``Blocked.position`` counts the jobs that still wait after this pass
    (``NEVER`` ones included) from 1.  ``preempted`` lists the running jobs to
    stop, each with the pending job it makes room for.
    """
    one = _Pass(snapshot)
    try:
        decisions = one.run()
    finally:
        if one.preemptor is not None:
            one.preemptor.done()  # its victim index is consistent whatever the pass did
        one.waiting.done()  # (the pass only reads it)
    one.cluster.done()  # (not reached if the pass failed: its cluster is not reused)
    if one.running_ends is not None:
        one.running_ends.done()
    return decisions


def _no_bigger(shape: Shape, than: Shape) -> bool:
    """Whether a job of ``shape`` fits wherever and whenever one of ``than`` fits."""
    return shape[0] == than[0] and all(map(operator.le, shape[1:], than[1:]))


def _size(shape: Shape) -> tuple[int, ...]:
    """A key never smaller for a shape than for one no bigger (``_no_bigger``): sorted by it
    in descending order, a shape comes before those it holds."""
    _, cpu, memory, gpu, tasks = shape
    return (gpu * tasks, cpu * tasks, memory * tasks, tasks)


def _patient(policy: Policy) -> bool:
    """Least attained service with backfill's patience: a job that backfill would start
    soon enough preempts no one for its level (``_Pass.starts_soon``)."""
    return bool(policy.las_thresholds_gpu_s) and policy.backfill and policy.las_patience_s > 0


def _has_attained(job: PendingJob) -> bool:
    """Whether ``job``'s LAS level may change while it waits (``las.pending_level``)."""
    return job.attained_gpu_s > 0


def share_tracker(
    snapshot: Snapshot, nodes: list[Node] | None = None, waiting: Iterable[str] | None = None
) -> ShareTracker:
    """Fair-share standing of every tenant in ``snapshot`` (unknown tenants: weight 1).
    ``nodes``: the snapshot's nodes, ``waiting``: the tenants of its pending jobs, if the
    caller has them already."""
    known = {t.name for t in snapshot.tenants}
    complete = snapshot.usage_complete  # usage already sums ``running``: no walk over it
    seen = {j.tenant for j in snapshot.pending} if waiting is None else set(waiting)
    if not complete:
        seen |= {r.tenant for r in snapshot.running}
    ghosts = sorted(seen - known)
    tenants = [*snapshot.tenants, *(TenantState(name, Quota()) for name in ghosts)]
    held: dict[str, list[int]] = {}
    for job in () if complete else snapshot.running:
        total = job.total
        sums = held.setdefault(job.tenant, [0, 0, 0])
        sums[0] += total.cpu_milli
        sums[1] += total.memory
        sums[2] += total.gpu
    allocation = {t.name: t.usage for t in tenants}  # usage is never negative
    for name, sums in held.items():
        usage = allocation[name]
        allocation[name] = Resources(
            max(usage.cpu_milli, sums[0]), max(usage.memory, sums[1]), max(usage.gpu, sums[2])
        )
    policy = snapshot.policy
    return ShareTracker(
        tenants,
        allocation,
        cluster_capacity(snapshot.nodes) if nodes is None else capacity_of(nodes),
        now=snapshot.now,
        half_life_s=policy.half_life_s,
        allocation_weight=policy.allocation_weight,
    )


class _Pass:
    """The working state of one pass; ``run()`` once."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.policy = policy = snapshot.policy
        self.now = snapshot.now
        self.cluster = Cluster.reuse(snapshot.nodes, snapshot.nodes_since)
        self.board = Board(self.cluster)
        nodes = self.cluster.given_nodes  # (the same list while the nodes are the same)
        self.feasibility = Feasibility.reuse(nodes)
        pool_of = self.feasibility.pool_of  # kept with it across passes on the same nodes
        self.ledger = QuotaLedger(
            snapshot.tenants,
            snapshot.running,
            pool_of,
            borrowing=policy.borrowing,
            usage_complete=snapshot.usage_complete,
        )
        cap = policy.short_first_cap_s
        self.due = due_by(cap) if cap > 0 else None  # shortest first: a job's due time
        self.waiting = self.queues()
        self.tracker = (
            share_tracker(snapshot, nodes, self.waiting.queues) if policy.fair_share else None
        )
        self.preemptor: Preemptor | None = None
        if policy.preemption:
            cohorts = {t.name: t.cohort if policy.borrowing else None for t in snapshot.tenants}
            self.preemptor = Preemptor(
                snapshot.running,
                self.ledger,
                self.board,
                pool_of,
                cohorts,
                policy=policy,
                now=snapshot.now,
                tracker=self.tracker,
                running_since=snapshot.running_since,
            )
        self.admitted: list[Admission] = []
        self.blocked: list[Blocked] = []
        # Jobs blocked so far (``Blocked.position``), and the last one's decision: without
        # ``report_blocked`` only the ``NEVER`` ones become ``Blocked`` (a queue of
        # thousands behind a preempting pass's last admission costs no object per job).
        self.waits = 0
        self.last_block: _Decision | None = None
        self.preempted: list[Preemption] = []
        self.ends: list[Release] = []  # admitted in this pass, with a walltime
        self.deferred: list[PendingJob] = []  # would borrow: after the others
        self.head: PendingJob | None = None  # the first job blocked for capacity
        self.behind: str | None = None  # strict FIFO: the QUEUE reason once the head waits
        self.reservation: Reservation | None = None  # the head's
        # Every reservation of the pass: the head's, then (``Policy.reserve_depth``) those
        # of the next jobs blocked for capacity; a job is short if it ends before all start.
        self.reservations: list[Reservation] = []
        self.short_until = math.inf
        self.soonest: PendingJob | None = None  # the reserved job that starts first
        self.running_ends: Ends | None = None  # taken at the first reservation of the pass
        self.soon: dict[Shape, bool] = {}  # ``starts_soon`` per job shape
        self.found: list[tuple[Shape, bool]] = []  # ``starts_by`` since ``found_version``
        self.found_version: tuple[int, int, int] | None = None
        # Whether a victim of lower priority than its tenant's top job left runs, per bound
        # on the priority of the jobs left (``preempts_none``; None: no bound).
        self.lower_victims: dict[int | None, bool] = {}
        self.reasons: dict[tuple[object, ...], str] = {}
        # A job that is blocked gets the same decision as the last job of its tenant and
        # shape blocked while the pass changed nothing (``changes``, same head): remembered
        # here, a queue of thousands costs one full decision per (tenant, shape) and a
        # lookup for the rest.  With preemption the key also holds what a victim search
        # reads of the job (``memo_key``).
        self.memo: dict[_MemoKey, _Memo] | None = {} if MEMO_BLOCKED else None
        # Counts what the pass keeps (admissions, preemptions, reservations).  Trials that
        # are undone (a victim search that failed, a fit in the unheld view) do not count,
        # whereas they do move ``Board.generation``: a memo keyed on that would miss after
        # every failed victim search of another tenant.
        self.changes = 0

    def queues(self) -> Waiting:
        """The pending jobs per tenant in queue order, kept from the last pass (a least
        attained service level changes with time only for a job that attained service
        already: those are keyed anew)."""
        pending, policy, due = self.snapshot.pending, self.policy, self.due
        since = self.snapshot.pending_since
        kind = ("due", policy.short_first_cap_s) if due is not None else ("plain",)
        if not policy.las_thresholds_gpu_s:
            return Waiting.take(pending, queue_key(due=due), kind, since)
        now = self.now

        def level(job: PendingJob) -> int:
            return pending_level(job, now, policy)

        las = (
            "las",
            policy.las_thresholds_gpu_s,
            policy.starvation_factor,
            policy.starvation_min_s,
            *kind,
        )
        return Waiting.take(pending, queue_key(level, due), las, since, moves=_has_attained)

    def run(self) -> Decisions:
        queues = self.waiting.queues
        stop = self.stopper(self.waiting)
        # (With preemption a job that cannot start may still preempt: none is passed over,
        # unless no job of the pass can preempt anyone.)
        skip = None if stop is None or not self.no_job_can_preempt() else stop.skip
        order = (
            merged(queues, skip)
            if self.tracker is None
            else fair_merge(queues, self.tracker, self.due, skip)
        )
        if stop is None:
            decide = self.decide  # (bound once: this runs for every waiting job of the pass)
            for job in order:
                decide(job, True)
        elif skip is None:
            decide, decided = self.decide, stop.decided
            for job in order:
                decide(job, True)
                if decided(job):
                    break
        else:
            # The merge passes over the settled jobs (``_Stop.skip``); one settled since
            # the merge found its tenant's next job gets no decision either.
            settled = stop.settled
            for job in order:
                if not settled(job, shape_of(job)):
                    self.decide(job, True)
        for job in self.deferred:
            self.decide(job, False)
        return Decisions(tuple(self.admitted), tuple(self.blocked), tuple(self.preempted))

    def stopper(self, waiting: Waiting) -> _Stop | None:
        """The early stop of ``Policy.report_blocked=False``, where it is exact: quotas, if
        any, only hard limits that no waiting shape exceeds (``quotas_stop``), no targeted
        jobs (shapes say all), and with preemption, a way to know that the jobs left preempt
        no one (``preempts_none``): with least attained service, only the patience of
        backfill (``starts_soon``) tells that."""
        policy = self.policy
        if (
            policy.report_blocked
            or not self.quotas_stop(waiting)
            or waiting.targeted
            or (self.preemptor is not None and policy.las_thresholds_gpu_s and not _patient(policy))
        ):
            return None
        return _Stop(self, waiting)

    def no_job_can_preempt(self) -> bool:
        """Whether no job of the pass can preempt anyone, so that the pass may pass over
        jobs that cannot start, as one without preemption does: no victim for attained
        service (least attained service off), no lent quota to reclaim (no cohort), no job
        waiting for victims already stopping, and no tenant running a preemptible job of a
        lower priority than its top waiting one.  That holds for the whole pass: victims
        only go, and the spare room a later job could take comes only from a preemption."""
        preemptor = self.preemptor
        if preemptor is None:
            return True
        if self.policy.las_thresholds_gpu_s or self.ledger.has_cohorts():
            return False
        if preemptor.waiting_for():
            return False
        return not preemptor.takes_lower_priority(self.waiting.top_priorities())

    def quotas_stop(self, waiting: Waiting) -> bool:
        """Whether the quotas let the pass stop early: none, or hard limits on each tenant's
        whole usage that no waiting shape exceeds (``QuotaLedger.only_hard_limits_within``:
        no job is deferred as a borrower or reclaims, and no job left is refused by its
        quota, ``NEVER``, which a stop before it would put off).  A job held back by its
        quota cannot start either, and whether it would preempt is what the stop asks of
        every job left (``preempts_none``, ``all_start_soon``), whatever its quota."""
        ledger = self.ledger
        return not ledger.limits_anyone() or ledger.only_hard_limits_within(
            (cpu * tasks, memory * tasks, gpu * tasks)
            for _, cpu, memory, gpu, tasks in waiting.by_shape
        )

    def decide(self, job: PendingJob, first_round: bool) -> None:
        memo = self.memo
        key = None if memo is None else self.memo_key(job, first_round)
        if memo is None or key is None:
            self.decide_one(job, first_round=first_round)
            return
        changes, head = self.changes, self.head
        hit = memo.get(key)
        if hit is not None and hit[0] == changes and hit[1] is head:
            decision = hit[2]
            if decision is None:
                self.deferred.append(job)
            elif decision[0] is BlockKind.NEVER or self.policy.report_blocked:
                self.block(job, *decision)
            else:  # (``block`` inlined: most of a long queue is counted here, not reported)
                self.waits += 1
                self.last_block = decision
            return
        count, deferred = self.waits, len(self.deferred)
        self.decide_one(job, first_round=first_round)
        if self.changes != changes or self.head is not head:
            return
        if self.waits == count + 1:
            assert self.last_block is not None
            memo[key] = (changes, head, self.last_block)
        elif len(self.deferred) == deferred + 1:
            memo[key] = (changes, head, None)

    def memo_key(self, job: PendingJob, first_round: bool) -> _MemoKey | None:
        """What ``decide_one`` reads of ``job``, to tell two jobs it decides alike; ``None``:
        decide it anyway (a nominated job waits for its own victims, and is never deferred
        as a borrower)."""
        if job.nominated:
            return None
        preemptor = self.preemptor
        victims: tuple[object, ...] = ()
        if preemptor is not None:
            if preemptor.stopping_for(job):
                return None
            policy, now = self.policy, self.now
            # A victim search reads the priority, the LAS level, whether the job waited
            # long enough to preempt for its level (and whether the pass has LAS searches
            # left), and whom the job must never preempt.
            victims = (
                job.priority,
                pending_level(job, now, policy),
                now - job.submitted_at >= policy.min_run_s,
                preemptor.las_searches_left,
                job.preempted_by,
            )
        r = job.per_task  # (its numbers: a tuple of them hashes and compares at C speed)
        return (
            job.tenant,
            job.pool,
            r.cpu_milli,
            r.memory,
            r.gpu,
            job.tasks,
            job.allowed_nodes,
            job.host_ports,
            job.preemptible,
            self.is_short(job),
            first_round,
            victims,
        )

    def decide_one(self, job: PendingJob, *, first_round: bool) -> None:
        ledger = self.ledger
        charge = ledger.charge_of_job(job)
        may_borrow = self.policy.lets_borrow(job)
        never = never_reason(self.feasibility, ledger, job, may_borrow=may_borrow, charge=charge)
        if never is not None:
            self.block(job, BlockKind.NEVER, NEVER_PREFIX + never)
            return
        # After every job within its nominal quota; but not a nominated job: the room its
        # victims freed is its own, and a victim within nominal quota would otherwise take
        # it back first, be preempted again, pass after pass (#12).
        if first_round and not job.nominated and ledger.borrows(charge):
            self.deferred.append(job)
            return
        reason = ledger.blocked_reason(charge, may_borrow=may_borrow)
        kind = BlockKind.QUOTA
        if reason is None and self.behind is not None:
            kind, reason = BlockKind.QUEUE, self.behind
        elif reason is None:
            short = self.is_short(job)
            placed, charge, reason = self.place(job, charge, short, may_borrow)
            if placed is not None:
                self.admit(job, placed, charge, short)
                return
            kind = BlockKind.CAPACITY if reason is None else BlockKind.QUOTA
        if (
            self.preemptor is not None
            and self.behind is None
            and kind is not BlockKind.QUEUE
            and self.preempt(job, may_borrow)
        ):
            return
        if kind is BlockKind.CAPACITY:
            self.capacity(job)
        else:
            assert reason is not None
            self.block(job, kind, reason)

    def is_short(self, job: PendingJob) -> bool:
        """Whether ``job`` ends before the reservation's start (so it cannot delay it)."""
        return (
            bool(self.reservations)
            and job.walltime_s is not None
            and self.now + job.walltime_s <= self.short_until
        )

    def place(self, job: PendingJob, charge: Charge, short: bool, may_borrow: bool) -> _Placed:
        """Place ``job``; a pool-less job of a tenant with pool quotas must fit where it lands."""
        placed = self.board.place(job, short=short)
        if placed is None or job.pool is not None or not self.ledger.has_pool_entries(job.tenant):
            return placed, charge, None
        landed = self.ledger.charge_of_placements(job.tenant, placed)
        why = self.ledger.blocked_reason(landed, may_borrow=may_borrow)
        if why is None:
            return placed, landed, None
        self.board.release(placed)
        for pool in self.cluster.pools():  # else within one pool that has room for it
            probe = PendingJob(
                job.id, job.tenant, job.priority, 0.0, 0, job.per_task, job.tasks, pool
            )
            if self.ledger.blocked_reason(self.ledger.charge_of_job(probe), may_borrow=may_borrow):
                continue
            placed = self.board.place(job, pool, short=short)
            if placed is not None:
                return placed, self.ledger.charge_of_placements(job.tenant, placed), None
        if job.tasks > 1:  # else a gang split across pools, each part within its quota
            placed = self.place_split(job, short, may_borrow)
            if placed is not None:
                return placed, self.ledger.charge_of_placements(job.tenant, placed), None
        return None, charge, why

    def place_split(
        self, job: PendingJob, short: bool, may_borrow: bool
    ) -> tuple[TaskPlacement, ...] | None:
        """Place a pool-less gang pool by pool, as many tasks in each as its room and the
        tenant's quota there allow (pools in name order; greedy, so a split that needs
        another order is not found).  Rare: only when no single pool takes the gang."""
        placed: tuple[TaskPlacement, ...] = ()
        left = job.tasks
        for pool in self.cluster.pools():
            for tasks in range(left, 0, -1):
                part = replace(job, tasks=tasks, pool=pool)
                here = self.board.place(part, pool, short=short)
                if here is None:
                    continue
                landed = self.ledger.charge_of_placements(job.tenant, placed + here)
                if self.ledger.blocked_reason(landed, may_borrow=may_borrow) is None:
                    placed, left = placed + here, left - tasks
                    break
                self.board.release(here)
            if not left:
                return placed
        if placed:
            self.board.release(placed)
        return None

    def admit(
        self, job: PendingJob, placed: tuple[TaskPlacement, ...], charge: Charge, short: bool
    ) -> None:
        self.changes += 1
        self.ledger.charge(charge)
        self.board.keep(placed, short=short)
        if self.tracker is not None:
            self.tracker.add(job.tenant, job.total)
        self.admitted.append(Admission(job.id, placed))
        if job.walltime_s is not None:
            self.ends.append((self.now + job.walltime_s, placed))

    def preempt(self, job: PendingJob, may_borrow: bool) -> bool:
        """Preempt for ``job``, or wait for what was preempted for it; ``False``: neither."""
        preemptor = self.preemptor
        assert preemptor is not None
        stopping = preemptor.stopping_for(job)
        if stopping:
            outcome = preemptor.wait(job, may_borrow)
        else:
            # (Whether backfill starts it soon is asked only where it matters: it costs.)
            las = preemptor.may_take_for_level(job) and not self.starts_soon(job)
            outcome = preemptor.preempt(job, may_borrow, las=las)
            if outcome is None:
                return False
            self.preempted.extend(outcome.preempted)
            stopping = len(outcome.preempted)
        if outcome is not None:
            self.changes += 1
            if self.tracker is not None:
                self.tracker.add(job.tenant, job.total)
        self.block(job, BlockKind.PREEMPTION, preemption_reason(stopping))
        return True

    def starts_soon(self, job: PendingJob) -> bool:
        """Least attained service with backfill: whether ``job`` would get a reservation
        within ``Policy.las_patience_s`` if it were the head now; it then preempts no job
        for its level (the victim would lose work and wait again, often longer: at light
        load a gang evicting a gang cost more than it saved).  Once per shape and pass."""
        policy = self.policy
        if not _patient(policy) or self.now - job.submitted_at < policy.min_run_s:
            return False
        key = shape_of(job)
        soon = self.soon.get(key)
        if soon is None:
            soon = self.soon[key] = self.could_start_by(job, key, self.now + policy.las_patience_s)
        return soon

    def could_start_by(self, job: PendingJob, shape: Shape, until: float) -> bool:
        """``backfill.starts_by`` in the held view now.  A shape no bigger than one found to
        start by ``until`` (same pool, no more of any resource per task, no more tasks)
        does too, and one no smaller than one found not to does not, for as long as the
        room and the releases stay as they were: such a shape is not looked up again."""
        version = (
            self.board.generation,
            len(self.ends),
            len(self.preemptor.taken) if self.preemptor else 0,
        )
        if version != self.found_version:
            self.found_version, self.found = version, []
        for other, yes in self.found:
            if _no_bigger(shape, other) if yes else _no_bigger(other, shape):
                return yes
        yes = starts_by(self.board.cluster, job, self.releases(), self.now, until)
        self.found.append((shape, yes))
        return yes

    def preempts_none(self, after: PendingJob) -> bool:
        """With preemption, the second half of the early stop (``_Stop``), as far as the
        pass's state tells: whether no job left in the queue after ``after`` would preempt
        for its priority or be promised room.  No tenant may run a victim of a lower
        priority than its top job left (one taken for priority alone, at any level and
        wait): the queue comes in priority order once past the nominated jobs, so no job
        left has a higher priority than ``after`` if it was not nominated.  No room may be
        spare from this pass's preemptions; every reservation must be made (one more would
        change the held view that ``starts_soon`` reads).  What least attained service
        needs besides is ``all_start_soon``'s."""
        preemptor, policy = self.preemptor, self.policy
        if preemptor is None:
            return True
        ceiling = None if after.nominated else after.priority
        lower = self.lower_victims.get(ceiling)
        if lower is None:
            top = self.waiting.top_priorities()
            if ceiling is not None:
                top = {tenant: min(priority, ceiling) for tenant, priority in top.items()}
            lower = self.lower_victims[ceiling] = preemptor.takes_lower_priority(top)
        return not (
            lower or preemptor.holds.has_spare or len(self.reservations) < policy.reserve_depth
        )

    def all_start_soon(self, shapes: Iterable[Shape]) -> bool:
        """With preemption and least attained service, the last part of the early stop: a
        job preempts for its level only if it waited ``min_run_s`` and backfill would not
        start its shape within ``Policy.las_patience_s``, so every shape left (none of
        which can start now) must start by then, as ``starts_soon`` would find (the pass
        changes nothing more)."""
        preemptor, policy = self.preemptor, self.policy
        if preemptor is None or not (policy.las_thresholds_gpu_s and preemptor.las_searches_left):
            return True
        if not _patient(policy):
            return False
        until = self.now + policy.las_patience_s
        # The biggest first: a shape no bigger than one found to start is answered by the
        # one walk (``could_start_by``), and the biggest are the likeliest to wait.
        for shape in sorted(shapes, key=_size, reverse=True):
            soon = self.soon.get(shape)  # (as it was first found in the pass: kept so)
            if soon is None:
                soon = self.could_start_by(_probe(shape), shape, until)
            if not soon:
                return False
        return True

    def capacity(self, job: PendingJob) -> None:
        """``job`` does not fit now: the first such job is the head and may get a reservation.

        A job holding fixed ports is never the head: what it waits for is mostly a port
        that another task holds, which no reservation of resources brings nearer, so it
        holds back neither the queue nor the room of others (as a Kubernetes pod waiting
        for its ``hostPort``)."""
        if job.host_ports:
            self.block(job, BlockKind.CAPACITY, self.no_room_reason(job, self.board.cluster))
            return
        if self.head is None:
            self.head = job
            reason = self.no_room_reason(job, self.cluster)
            if self.policy.backfill:
                self.reservation = reserve(
                    self.cluster,
                    job,
                    self.releases(),
                    self.now,
                    ordered=True,
                    late=self.policy.reserve_late,
                )
            if self.reservation is None:
                self.behind = queue_reason(job)
                self.block(job, BlockKind.CAPACITY, reason)
                return
            self.changes += 1
            self.board.start_guard(self.reservation)
            self.reservations.append(self.reservation)
            start = self.short_until = self.reservation.start
            self.soonest = job
            self.block(job, BlockKind.CAPACITY, self.expecting(reason, start), start)
            return
        assert self.reservation is not None  # strict FIFO never gets here after the head
        if len(self.reservations) < self.policy.reserve_depth and self.reserve_next(job):
            return
        if not self.policy.report_blocked:
            # No one reads why it waits (its kind is read by no rule): no trial in the
            # unheld view to tell the reservation's queue from a lack of room.
            self.block(job, BlockKind.CAPACITY, "")
            return
        if self.board.fits_unheld(job):
            assert self.soonest is not None
            reason = reserved_reason(self.soonest, self.short_until, self.now)
            self.block(job, BlockKind.QUEUE, reason)
            return
        self.block(job, BlockKind.CAPACITY, self.unheld_capacity_reason(job))

    def reserve_next(self, job: PendingJob) -> bool:
        """Conservative backfill to a depth (``Policy.reserve_depth``): a blocked job after
        the head gets a reservation too, made around the earlier ones, so that no job
        started later in the pass delays it.  Without it (plain EASY), a whole-node job
        behind a wide gang at the head is overtaken, pass after pass, by small jobs that
        take the nodes as they drain, while the gang's reservation holds others idle."""
        found = reserve(
            self.board.unheld(),
            job,
            self.releases(),
            self.now,
            ordered=True,
            late=self.policy.reserve_late,
            taken=self.reservations,
        )
        if found is None:
            return False
        self.changes += 1
        self.reservations.append(found)
        self.board.add_reservation(found)
        if found.start < self.short_until:
            self.short_until, self.soonest = found.start, job
        reason = self.expecting(self.unheld_capacity_reason(job), found.start)
        self.block(job, BlockKind.CAPACITY, reason, found.start)
        return True

    def no_room_reason(self, job: PendingJob, cluster: Cluster) -> str:
        """``capacity_reason``; empty if no one reads it (``Policy.report_blocked`` off, as
        in the simulator): that spares a walk of the nodes for each reason."""
        if not self.policy.report_blocked:
            return ""
        return capacity_reason(job, cluster, detailed=self.policy.detailed_reasons)

    def expecting(self, reason: str, start: float) -> str:
        """``reason`` with when the job is expected to start (if anyone reads it)."""
        return f"{reason}; expected to start {expected_in(start, self.now)}" if reason else ""

    def unheld_capacity_reason(self, job: PendingJob) -> str:
        """``capacity_reason`` as if nothing were reserved, once per job shape in a pass."""
        if not self.policy.report_blocked:
            return ""
        r = job.per_task
        key = (job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks)
        reason = self.reasons.get(key)
        if reason is None:
            reason = self.reasons[key] = capacity_reason(
                job, self.board.unheld(), detailed=self.policy.detailed_reasons
            )
        return reason

    def releases(self) -> Iterator[Release]:
        """What will give resources back, in end order: running jobs as they are (the kept
        order of ``Ends``), and admissions of this pass."""
        taken = self.preemptor.taken if self.preemptor is not None else frozenset()
        given = self.snapshot.running_by_end
        theirs: Iterator[Release]
        if given is not None:
            theirs = (
                (job.expected_end or 0.0, job.placements) for job in given if job.id not in taken
            )
        else:
            if self.running_ends is None:
                self.running_ends = Ends.take(self.snapshot.running)
            theirs = self.running_ends.releases(taken)
        if not self.ends:
            return theirs  # (nothing admitted yet in this pass: no merge to pay for)
        return heapq.merge(theirs, sorted(self.ends, key=_end_of), key=_end_of)

    def block(
        self, job: PendingJob, kind: BlockKind, reason: str, expected: float | None = None
    ) -> None:
        self.waits += 1
        self.last_block = (kind, reason, expected)
        if kind is BlockKind.NEVER or self.policy.report_blocked:
            self.blocked.append(Blocked(job.id, kind, reason, self.waits, expected))


class _Stop:
    """Knows which jobs left in a pass's queue need no decision (``Policy.report_blocked``
    off: no one reads why a job waits).

    A job is ``settled`` when the same rules ``decide`` applies would block it: its shape
    failed to fit in the held view (``Board``'s failure cache; free room only shrinks in a
    pass), and, while a reservation stands, it either failed in the unheld view too or
    ends after the reservation starts (not short); or it waits behind a head without
    reservation (strict FIFO).  Without preemption the queue's merge passes over settled
    jobs (``skip``, by bisection in ``Waiting.shape_queues``): a pass decides only the
    jobs that may start or whose shape was not tried yet, however long the queue behind.

    With preemption a blocked job may still preempt, so no job is passed over (unless no
    job of the pass can preempt anyone, ``_Pass.no_job_can_preempt``): the pass
    stops once no job left can start (``none_left_starts``: a remaining shape not tried
    yet is tried there, by ``Board.fits_held`` and ``fits_unheld``, trials that leave
    the cluster as it was), every job whose victims are stopping has been decided, and
    no job left would preempt (``_Pass.preempts_none``, ``_Pass.all_start_soon``).  It
    is checked only when a failure cache grew, or no job is left of the shape that fitted
    at the last check (``fit_found``), so a pass pays for it a few times per shape at
    most.  The counts of the pass's jobs are the kept queues'
    (``waiting.Waiting``); the jobs decided are counted here.
    """

    def __init__(self, one: _Pass, waiting: Waiting) -> None:
        self.one = one
        # The pass's jobs per shape (``Board``'s key) and time limit (inf: none), read only;
        # those decided so far are counted apart, so a pass does not copy the counts.
        self.by_shape = waiting.by_shape
        self.shape_count = waiting.shape_count
        self.left = len(waiting)
        self.taken: Counter[Shape] = Counter()
        self.taken_times: Counter[tuple[Shape, float]] = Counter()
        self.seen = -1
        # Decided, not counted yet: counted only once a check needs the counts.
        self.uncounted: list[PendingJob] = []
        # Jobs not decided yet whose victims are stopping (they are promised that room).
        preemptor = one.preemptor
        self.waiting_for = set(preemptor.waiting_for()) if preemptor is not None else set()
        # The shape left that fitted when the last check failed, and how many of its jobs
        # left may take that room (all, or in the unheld view the short ones): the check
        # is due again once none is, as well as when a failure cache grows (a queue whose
        # last fitting jobs were all admitted, the rest failing as before, would otherwise
        # be decided to its end).
        self.fitting: Shape | None = None
        self.fitting_left = 0
        self.fitting_short = False

    def settled(self, job: PendingJob, shape: Shape) -> bool:
        """Whether ``job`` (of ``shape``) can neither start in this pass nor change anything
        for the jobs after it: then it gets no decision at all.  That is so behind a head
        without reservation (strict FIFO: it waits in the queue, unless it never runs), and
        once every reservation is made (none more for it), when its shape was found not to
        fit in the held view, and, if it is short, in the unheld view too (as ``decide``
        would find again, by the failure caches, and block it)."""
        one = self.one
        if one.head is None:
            return False
        if one.behind is not None:
            return not one.feasibility.shape_never(shape)
        board = one.board
        return (
            len(one.reservations) >= one.policy.reserve_depth
            and board.failed_held(shape)
            and (not one.is_short(job) or board.failed_unheld(shape))
        )

    def skip(self, tenant: str, queue: Sequence[Entry], i: int) -> int:
        """The index of the first job at or after ``i`` in ``tenant``'s queue that is not
        ``settled`` (the queue's length if none is): the queue's merge passes over the jobs
        in between (``queue.merged``, ``queue.fair_merge``).  Without a walk of them: a
        shape's jobs are either all settled, all not, or (failed in the held view only)
        settled unless short, so the first job not settled is the first job of a shape of
        the second kind, or the first short job of one of the third, each found by bisection
        in ``Waiting.shape_queues``.  Behind a queue of thousands that cannot start, a pass
        then costs what its decisions cost, whatever the length of the queue."""
        if i >= len(queue):
            return i
        job = queue[i][2]
        if not self.settled(job, shape_of(job)):
            return i  # (the commonest case: no index needed)
        after = queue[i]
        first: Entry | None = None
        one = self.one
        now, until = one.now, one.short_until
        for shape, jobs in one.waiting.shape_queues(tenant).items():
            settled = self.shape_settled(shape)
            if settled is None:
                first = _first_after(jobs.entries, after, first)
            elif not settled and one.reservations:  # (no reservation: none is short)
                for limit in jobs.limits:
                    if not now + limit <= until:  # (as ``is_short`` reckons; ascending)
                        break
                    first = _first_after(jobs.by_limit[limit], after, first)
        return len(queue) if first is None else bisect_left(queue, first, i)

    def shape_settled(self, shape: Shape) -> bool | None:
        """``settled`` for every job of ``shape``: True if all are, False if all are but
        the short ones, None if none is."""
        one = self.one
        if one.head is None:
            return None
        if one.behind is not None:
            return None if one.feasibility.shape_never(shape) else True
        board = one.board
        if len(one.reservations) < one.policy.reserve_depth or not board.failed_held(shape):
            return None
        return board.failed_unheld(shape)

    def count(self) -> None:
        """Count the jobs decided since the last count."""
        jobs = self.uncounted
        shapes = list(map(shape_of, jobs))
        self.taken.update(shapes)
        self.taken_times.update(zip(shapes, map(time_limit, jobs), strict=True))
        self.left -= len(jobs)
        if self.waiting_for:
            self.waiting_for.difference_update(job.id for job in jobs)
        jobs.clear()

    def decided(self, job: PendingJob) -> bool:
        """Take ``job`` as decided; whether no job left (all after it) can start now."""
        self.uncounted.append(job)
        if (
            self.fitting is not None
            and shape_of(job) == self.fitting
            and (not self.fitting_short or self.one.is_short(job))
        ):
            self.fitting_left -= 1
            if not self.fitting_left:
                self.fitting = None
                self.seen = -1  # (the check is due)
        return self.none_left_starts(job)

    def fit_found(self, shape: Shape, *, short: bool) -> None:
        """A check failed because jobs of ``shape`` left fit (``short``: only the short ones,
        in the unheld view): count them, to know when the check is due again."""
        self.fitting, self.fitting_short = shape, short
        if short:
            self.fitting_left = sum(self.short_left(shape, self.one.now, self.one.short_until))
        else:
            self.fitting_left = self.shape_count[shape] - self.taken[shape]

    def none_left_starts(self, after: PendingJob) -> bool:
        """Whether no job left (of those not decided, all after ``after``) can start now.
        Asked only once a failure cache grew, or the jobs that fitted at the last asking
        are all decided (``fit_found``): a pass that never blocks a job for capacity counts
        no job.  When no job is left, the queue's merge has none more to give either."""
        one = self.one
        board = one.board
        grown = board.failures
        if grown == self.seen or one.head is None:
            return False
        self.count()
        if not self.left:
            return True
        taken = self.taken
        left = [s for s, n in self.shape_count.items() if n > taken[s]]
        if any(map(one.feasibility.shape_never, left)):
            return False
        if one.behind is not None:
            return True  # strict FIFO behind the head: every job left waits (QUEUE)
        try:
            # (What preemption needs first: it is cheaper than the trials.)
            if self.waiting_for or not one.preempts_none(after):
                return False
            # Every trial in the held view, then every one in the unheld view: each switch
            # of view moves the holds of every reserved node.
            for s in left:
                if not board.failed_held(s) and board.fits_held(_probe(s)):
                    self.fit_found(s, short=False)
                    return False
            now, until = one.now, one.short_until
            for s in left:
                if (
                    not board.failed_unheld(s)
                    and self.any_short(s, now, until)
                    and board.fits_unheld(_probe(s))
                ):
                    self.fit_found(s, short=True)
                    return False  # it may backfill
            return one.all_start_soon(left)
        finally:
            self.seen = board.failures

    def any_short(self, shape: Shape, now: float, until: float) -> bool:
        """Whether a job of ``shape`` not decided yet is short."""
        return any(self.short_left(shape, now, until))

    def short_left(self, shape: Shape, now: float, until: float) -> Iterator[int]:
        """How many jobs of ``shape`` not decided yet are short, per short time limit (some
        may be 0): ``now + limit <= until``, as ``is_short`` reckons."""
        taken = self.taken_times
        for limit, n in self.by_shape[shape].items():
            if now + limit <= until:
                yield n - taken[shape, limit]


def _first_after(entries: Sequence[Entry], after: Entry, first: Entry | None) -> Entry | None:
    """The earlier of ``first`` and the first of ``entries`` (in queue order) at or after
    ``after``."""
    k = bisect_left(entries, after)
    if k < len(entries) and (first is None or entries[k] < first):
        return entries[k]
    return first


@functools.lru_cache(maxsize=1024)
def _probe(shape: Shape) -> PendingJob:
    """A job of ``shape`` for trials that read nothing else of it (frozen, so one per shape
    serves every pass: the early stop asks for it per shape left, many times a pass)."""
    pool, cpu, memory, gpu, tasks = shape
    return PendingJob("", "", 0, 0.0, 0, Resources(cpu, memory, gpu), tasks, pool)
