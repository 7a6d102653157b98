"""Discrete-event replay of a trace through the real, pure ``virtuai.scheduler.schedule``.

The clock is virtual: it jumps from one event time to the next.  Events are job
submissions (from the trace) and job ends (a start plus the job's duration, or
its walltime if that is shorter: the job is then killed and ends ``timed_out``).
At each event time, in this order:

1. every job ending at that time releases its nodes and its tenant's quota;
   Preempted jobs whose stop time has come stop too and go back to the queue;
2. every job submitted at that time joins the queue; a job that could never run
   on these nodes or within the most quota its tenant could ever hold is refused,
   as the API refuses it at submit (in the scheduler's words), and counts as
   ``rejected`` (so would a job the scheduler reported ``NEVER`` in a pass);
3. one scheduling pass, if something changed and a job could be admitted
   (``FreeRoom.could_admit``; always when the policy preempts): a ``Snapshot`` of
   the nodes with their allocations, the tenants (quotas, cohort, weight, decayed
   usage history), the waiting and the running jobs, ``now`` and the policy goes
   to ``schedule()``; admitted jobs start now, on exactly the nodes and devices
   the scheduler chose; preempted jobs are told to stop;
4. a sample of the timeline: the queue length and allocations of the tenants and
   pools that changed (``timeline.py``).

So one pass happens per distinct event time, as the live control plane makes one
pass per tick when something wakes it.  With ``tick_s`` > 0, event times are
rounded up to the next multiple of it (Slurm simulators' ``sched_interval``, the
control plane's ``scheduler.interval_s``): fewer, bigger passes.  A job that
ended between ticks keeps its real finish time (JCT is exact) but holds its
resources until the tick, and submissions wait for it.  A preempted job stops
``preemption_grace`` seconds later (0 by default: at once, and another pass
follows at the same time so that its preemptor can start); it goes back to the
queue with its original submission time, *nominated* (``PendingJob.nominated``)
until it starts, so that the room its victims free is its own, as the control
plane does.  Checkpoint/restart cost (``PolicySpec.checkpoint_interval_s``,
``restart_overhead_s``, or the job's own from its trace: ``TraceJob.checkpoint_interval``,
``restart_overhead``): a preempted job keeps the work up to its last
checkpoint (a multiple of the interval of work done; none without checkpoints:
it restarts from scratch) and loses the rest; each restart first spends the
overhead (loading the checkpoint) before it makes progress again.  What it
attained (GPU-seconds held, ``PendingJob.attained_gpu_s``) is kept for least
attained service.  Usage history (for fair share) is accrued when a
job stops, as the control plane records usage when a job ends.

A replay that makes no progress, ``stall_passes`` passes in a row that start or
preempt jobs with no job finished and none submitted (only preempted jobs stopping
and starting again), stops with ``SimStalled`` naming the jobs that kept being
preempted: it never spins.  Passes that change nothing do not count: they make no
new event, so they cannot go on forever (a job that no pass ever starts is left
unfinished when the events run out), and a long job's run may see thousands of them
(the wake-ups of jobs that ended, whose times are kept).

Speed: the nodes' ``NodeState``s are kept between passes and only those whose
allocation changed are rebuilt; the snapshot's tuples are rebuilt only when
dirty; waiting jobs are counted by shape so the skip test looks at a few dozen
shapes, not at every job; the running jobs with a known end are kept in end order
as they start and stop (``Snapshot.running_by_end``), so backfill's reservation
reads only the first few ends instead of ordering thousands of running jobs.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from virtuai.domain.resources import Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.domain.workload import JobState, TaskPlacement
from virtuai.scheduler import schedule
from virtuai.scheduler.fairshare import accrue
from virtuai.scheduler.feasibility import Feasibility
from virtuai.scheduler.las import gpu_weight
from virtuai.scheduler.never import never_reason
from virtuai.scheduler.quota import QuotaLedger
from virtuai.scheduler.reasons import NEVER_PREFIX
from virtuai.scheduler.snapshot import (
    BlockKind,
    Decisions,
    HistoricalUsage,
    NodeState,
    PendingJob,
    RunningJob,
    Snapshot,
    TenantState,
)
from virtuai.sim.cluster import ClusterSpec
from virtuai.sim.freeroom import FreeRoom, Shape
from virtuai.sim.policy import FIFO, PolicySpec
from virtuai.sim.timeline import Timeline
from virtuai.sim.trace import TraceJob

__all__ = [
    "STALL_PASSES",
    "Outcome",
    "SimRun",
    "SimStalled",
    "Simulation",
    "Timeline",
    "replay_order",
    "simulate",
]

# Passes in a row with no job finished or submitted before a replay is declared stuck.
STALL_PASSES = 1000
Progress = Callable[[int, int, float], None]  # (jobs done, jobs, simulated time)


class SimStalled(RuntimeError):
    """The replay made no progress: the same jobs were preempted and restarted over and over."""

    def __init__(self, message: str, jobs: Sequence[str]) -> None:
        super().__init__(message)
        self.jobs = list(jobs)

    def __reduce__(self) -> tuple[type[SimStalled], tuple[str, list[str]]]:
        # (Raised in a worker process by an isolated replay: it crosses back pickled.)
        return type(self), (str(self), self.jobs)


def replay_order(jobs: Iterable[TraceJob]) -> list[TraceJob]:
    """``jobs`` in the order a replay numbers them (``SimRun.jobs``): by submission time,
    ties as given."""
    return sorted(jobs, key=lambda j: j.submit)


class Outcome:
    """How a job of the trace ended in the simulation."""

    SUCCEEDED = str(JobState.SUCCEEDED)
    TIMED_OUT = str(JobState.TIMED_OUT)
    REJECTED = "rejected"  # could never run: refused at submit (or NEVER in a pass)
    UNFINISHED = "unfinished"  # still waiting (or running) when the events ran out


@dataclass
class SimRun:
    """Everything one replay observed; ``virtuai.sim.metrics`` turns it into numbers."""

    jobs: list[TraceJob]
    cluster: ClusterSpec
    policy: PolicySpec
    timeline: Timeline
    outcome: list[str]
    first_start: list[float]
    last_start: list[float]
    finish: list[float]
    ran: list[float]  # seconds held over all attempts (preempted ones included)
    preemptions: list[int]
    lost: list[float] = field(default_factory=list)  # seconds of work lost to preemptions
    evictions: list[tuple[str, str]] = field(default_factory=list)  # (victim, preemptor)
    rejected: dict[int, str] = field(default_factory=dict)  # job number -> reason
    events: int = 0
    passes: int = 0
    skipped: int = 0


# Job events: (time, order, job number, attempt, kind).
_End = tuple[float, int, int, int, int]
_FINISH, _STOP, _WAKE = 0, 1, 2  # kinds: it ends; a preempted job stops; it may be a victim now


class Simulation:
    """One replay of ``jobs`` on ``cluster`` under ``policy``; call ``run()`` once."""

    def __init__(
        self,
        jobs: Sequence[TraceJob],
        cluster: ClusterSpec,
        policy: PolicySpec = FIFO,
        *,
        tick_s: float = 0.0,
        progress: Progress | None = None,
        stall_passes: int = STALL_PASSES,
        scheduler: Callable[[Snapshot], Decisions] = schedule,
    ) -> None:
        if not 0 <= tick_s < math.inf:
            raise ValueError("tick_s must be >= 0 and finite")
        self.tick_s = tick_s
        self.stall_passes = stall_passes
        self._schedule = scheduler  # the real one; tests may pass a broken one
        self.jobs = replay_order(jobs)
        self.cluster = cluster.with_tenants(j.tenant for j in self.jobs)
        self.policy = policy
        # (No pending reason is shown, so the scan that details fragmentation is saved.)
        # (Nor any waiting job's decision: a pass may stop once nothing more can start.)
        self._policy = replace(
            policy.scheduler_policy(), detailed_reasons=False, report_blocked=False
        )
        self.progress = progress
        nodes: list[Node] = self.cluster.nodes()
        pools = [p.name for p in self.cluster.pools]
        self._tenants = list(self.cluster.tenants)
        self._tenant_no = {t.name: i for i, t in enumerate(self._tenants)}
        # The hard quotas the skip test may apply itself; cohorts and pool entries are
        # left to the scheduler (the test then only looks at the free room).
        self._quota_test: dict[str, Quota] = {
            t.name: t.quota
            for t in self._tenants
            if not t.pool_quotas and (t.cohort is None or not self._policy.borrowing)
        }
        self._pool_no = {name: i for i, name in enumerate(pools)}
        self._node_no = {node.name: i for i, node in enumerate(nodes)}
        self._node_pool = [self._pool_no[node.pool] for node in nodes]
        self._states = [NodeState(node) for node in nodes]
        self._node_tuple: tuple[NodeState, ...] = tuple(self._states)
        self._nodes_changed: set[int] = set()  # positions changed since that tuple was made
        self._nodes_since: tuple[tuple[NodeState, ...], frozenset[int]] | None = None
        self._history = [HistoricalUsage() for _ in self._tenants]
        # Each tenant's state is made again only when its usage or history changed: with
        # a thousand tenants (PAI's users), remaking all of them each pass was most of it.
        self._tenant_states = [
            t.state(history=self._history[k]) for k, t in enumerate(self._tenants)
        ]
        self._tenant_tuple: tuple[TenantState, ...] = tuple(self._tenant_states)
        self._dirty_tenants: set[int] = set()
        self._room = FreeRoom(nodes)
        self._feasibility = Feasibility(nodes)
        # What a job may ever hold (nominal quotas, cohorts' lendable, limits): a job over
        # it is rejected at submit, as the control plane refuses it (a pass that the
        # free-room test skips would never reject it).
        self._quotas = QuotaLedger(
            (t.state() for t in self._tenants),
            pool_of={node.name: node.pool for node in nodes},
            borrowing=self._policy.borrowing,
        )
        self._id_no = {job.id: j for j, job in enumerate(self.jobs)}
        if len(self._id_no) != len(self.jobs):
            raise ValueError("job ids must be unique")
        n = len(self.jobs)
        self._pending: dict[int, PendingJob] = {}
        # The queue of the last snapshot, and what left and joined it since (by id()).
        self._last_pending: tuple[PendingJob, ...] | None = None
        self._gone: list[PendingJob] = []
        self._added: dict[int, PendingJob] = {}
        self._running: dict[int, RunningJob] = {}
        self._running_tuple: tuple[RunningJob, ...] = ()
        self._running_dirty = False
        # The same for the running jobs: ``Snapshot.running_since``.
        self._last_running: tuple[RunningJob, ...] | None = None
        self._stopped: list[RunningJob] = []
        self._began: dict[int, RunningJob] = {}
        # (expected end, job) of the running jobs that will release at a known time and
        # are not preempting, in order: ``Snapshot.running_by_end``.
        self._by_end: list[tuple[float, int]] = []
        self._waiting: dict[Shape, int] = {}
        self._waiting_by_tenant = [0] * len(self._tenants)
        self._usage: dict[str, list[int]] = {t.name: [0, 0, 0] for t in self._tenants}
        self._pool_alloc = [[0, 0, 0] for _ in pools]
        # What changed since the timeline's last sample.
        self._sampled_tenants: set[int] = set()
        self._sampled_pools: set[int] = set()
        self._attempt = [0] * n
        self._left = [job.run_s for job in self.jobs]  # work still to do
        self._attained = [0.0] * n  # GPU-seconds held in finished attempts
        self._preempted_by: list[frozenset[str]] = [frozenset()] * n
        self._nominated: set[int] = set()  # preemptors not started since
        self._quiet = 0  # passes since a job last finished or was submitted
        self._stall_log: dict[int, int] = {}  # preemptions per job while quiet
        self._ends: list[_End] = []
        self._order = 0
        self._done = 0
        self.result = SimRun(
            jobs=self.jobs,
            cluster=self.cluster,
            policy=policy,
            timeline=Timeline([t.name for t in self._tenants], pools),
            outcome=[Outcome.UNFINISHED] * n,
            first_start=[math.nan] * n,
            last_start=[math.nan] * n,
            finish=[math.nan] * n,
            ran=[0.0] * n,
            preemptions=[0] * n,
            lost=[0.0] * n,
        )

    # The event loop -------------------------------------------------------------------

    def run(self) -> SimRun:
        jobs, ends, result = self.jobs, self._ends, self.result
        n, i = len(jobs), 0
        always = self._policy.preemption  # a preempting pass may admit beyond the free room
        tick = self.tick_s
        while i < n or ends:
            t = min(jobs[i].submit if i < n else math.inf, ends[0][0] if ends else math.inf)
            if tick > 0:
                t = math.ceil(t / tick) * tick
            changed = False
            while ends and ends[0][0] <= t:
                end, _, j, attempt, kind = heapq.heappop(ends)
                if attempt == self._attempt[j]:
                    if kind == _WAKE:
                        changed = True  # past its minimum run or a LAS threshold: a pass may
                        continue  # preempt it now (the control plane's next tick would)
                    if kind == _STOP:
                        self._requeue(j, end)
                    else:
                        self._finish(j, end)
                        self._quiet = 0
                    changed = True
            while i < n and jobs[i].submit <= t:
                changed = self._submit(i) or changed
                self._quiet = 0
                i += 1
            result.events += 1
            if self._pending and changed:
                if always or self._room.could_admit(self._waiting, self._usage, self._quota_test):
                    result.passes += 1
                    decisions = self._schedule(self._snapshot(t))
                    self._apply(decisions, t)
                    if decisions.admitted or decisions.preempted:
                        self._watch(t)
                else:
                    result.skipped += 1
            self._record(t)
        return result

    def _watch(self, t: float) -> None:
        """Stop a replay that only preempts and restarts jobs (see the module docstring)."""
        if self._quiet == 0:
            self._stall_log.clear()
        self._quiet += 1
        if self._quiet < self.stall_passes:
            return
        worst = sorted(self._stall_log.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        names = [self.jobs[j].id for j, _ in worst]
        detail = ", ".join(f"job {self.jobs[j].id} ({k}x)" for j, k in worst) or "none"
        raise SimStalled(
            f"no progress at simulated time {t:,.0f} s: {self._quiet} scheduling passes "
            f"started or preempted jobs without a job finishing or arriving; preempted over "
            f"and over: {detail}",
            names,
        )

    def _snapshot(self, now: float) -> Snapshot:
        if self._nodes_changed:
            changed = frozenset(self._nodes_changed)
            self._nodes_since = (self._node_tuple, changed)
            self._node_tuple = tuple(self._states)
            self._nodes_changed.clear()
        if self._dirty_tenants:
            for k in self._dirty_tenants:
                t = self._tenants[k]
                usage = Resources(*self._usage[t.name])
                self._tenant_states[k] = t.state(usage, history=self._history[k])
            self._dirty_tenants.clear()
            self._tenant_tuple = tuple(self._tenant_states)
        if self._running_dirty:
            self._running_tuple = tuple(self._running.values())
            self._running_dirty = False
        running_since = None
        if self._last_running is not None:
            running_since = (self._last_running, tuple(self._stopped), tuple(self._began.values()))
        self._last_running = self._running_tuple
        self._stopped.clear()
        self._began.clear()
        pending = tuple(self._pending.values())
        since = None
        if self._last_pending is not None:
            since = (self._last_pending, tuple(self._gone), tuple(self._added.values()))
        self._last_pending = pending
        self._gone.clear()
        self._added.clear()
        return Snapshot(
            self._node_tuple,
            self._tenant_tuple,
            pending,
            running=self._running_tuple,
            now=now,
            policy=self._policy,
            usage_complete=True,  # ``_charge`` keeps each tenant's usage as jobs start and stop
            running_by_end=_ByEnd(self._by_end, self._running),
            pending_since=since,  # what joined and left the queue since the last snapshot
            running_since=running_since,  # and what started and stopped
            nodes_since=self._nodes_since,  # and which nodes changed
        )

    def _apply(self, decisions: Decisions, t: float) -> None:
        for preemption in decisions.preempted:
            self._preempt(self._id_no[preemption.job_id], preemption.preemptor_id, t)
            p = self._id_no[preemption.preemptor_id]
            if p not in self._nominated and p in self._pending:
                self._nominated.add(p)
                self._leaves(self._pending[p])
                self._pending[p] = self._joins(self._pending_job(p))
        for admission in decisions.admitted:
            self._start(self._id_no[admission.job_id], admission.placements, t)
        for blocked in decisions.blocked:
            if blocked.kind is BlockKind.NEVER:
                self._reject(self._id_no[blocked.job_id], blocked.reason)

    # Job life cycle -------------------------------------------------------------------

    def _pending_job(self, j: int) -> PendingJob:
        job = self.jobs[j]
        return PendingJob(
            id=job.id,
            tenant=job.tenant,
            priority=job.priority,
            submitted_at=job.submit,
            seq=j,
            per_task=job.per_task,
            tasks=job.tasks,
            pool=job.pool,
            walltime_s=None if math.isinf(job.walltime) else math.ceil(job.walltime),
            preemptible=job.preemptible,
            nominated=j in self._nominated,
            attained_gpu_s=self._attained[j],
            preempted_by=self._preempted_by[j],
        )

    def _submit(self, j: int) -> bool:
        pending = self._pending_job(j)
        may_borrow = self._policy.lets_borrow(pending)
        never = never_reason(self._feasibility, self._quotas, pending, may_borrow=may_borrow)
        if never is not None:
            self.result.outcome[j] = Outcome.REJECTED
            self.result.rejected[j] = NEVER_PREFIX + never  # (a pass's words for it)
            return False
        self._enqueue(j, pending)
        return True

    def _joins(self, pending: PendingJob) -> PendingJob:
        """``pending`` joins the queue (``Snapshot.pending_since`` tells the next pass)."""
        self._added[id(pending)] = pending
        return pending

    def _leaves(self, pending: PendingJob) -> None:
        """``pending`` leaves the queue (unless it came since the last pass: then it is as
        if it had never come)."""
        if self._added.pop(id(pending), None) is None:
            self._gone.append(pending)

    def _shape(self, job: TraceJob) -> Shape:
        r = job.per_task
        return (job.tenant, job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks)

    def _enqueue(self, j: int, pending: PendingJob) -> None:
        job = self.jobs[j]
        self._pending[j] = self._joins(pending)
        shape = self._shape(job)
        self._waiting[shape] = self._waiting.get(shape, 0) + 1
        tenant = self._tenant_no[job.tenant]
        self._waiting_by_tenant[tenant] += 1
        self._sampled_tenants.add(tenant)

    def _dequeue(self, j: int) -> None:
        job = self.jobs[j]
        pending = self._pending.pop(j, None)
        if pending is None:
            raise RuntimeError(f"the scheduler decided on job {job.id}, which is not waiting")
        self._leaves(pending)
        shape = self._shape(job)
        left = self._waiting[shape] - 1
        if left:
            self._waiting[shape] = left
        else:
            del self._waiting[shape]
        tenant = self._tenant_no[job.tenant]
        self._waiting_by_tenant[tenant] -= 1
        self._sampled_tenants.add(tenant)

    def _reject(self, j: int, reason: str) -> None:
        self._dequeue(j)
        self.result.outcome[j] = Outcome.REJECTED
        self.result.rejected[j] = reason

    def _start(self, j: int, placements: tuple[TaskPlacement, ...], t: float) -> None:
        job = self.jobs[j]
        self._dequeue(j)
        self._nominated.discard(j)
        for placement in placements:
            self._hold(placement, +1)
        self._charge(job, +1)
        walltime = None if math.isinf(job.walltime) else math.ceil(job.walltime)
        self._runs(
            j,
            RunningJob(
                id=job.id,
                tenant=job.tenant,
                priority=job.priority,
                placements=placements,
                started_at=t,
                expected_end=None if walltime is None else t + walltime,
                preemptible=job.preemptible,
                seq=j,
                attained_gpu_s=self._attained[j],
                preempted_by=self._preempted_by[j],
            ),
        )
        if walltime is not None:
            insort(self._by_end, (t + walltime, j))
        result = self.result
        overhead = 0.0
        if math.isnan(result.first_start[j]):
            result.first_start[j] = t
        else:
            overhead = self._restart_overhead(j)
        result.last_start[j] = t
        self._push(t + overhead + self._left[j], j, _FINISH)
        if self._policy.preemption and job.preemptible:
            self._wakes(j, t)

    def _wakes(self, j: int, t: float) -> None:
        """Events when running job ``j`` becomes a possible victim: past the minimum run,
        and (least attained service) as it crosses each level's threshold."""
        policy = self._policy
        if policy.min_run_s > 0:
            self._push(t + policy.min_run_s, j, _WAKE)
        total = self.jobs[j].total
        rate = gpu_weight(total.gpu, total.cpu_milli)
        for bound in policy.las_thresholds_gpu_s:
            if bound > self._attained[j] and rate > 0:
                self._push(t + (bound - self._attained[j]) / rate, j, _WAKE)

    def _push(self, at: float, j: int, kind: int) -> None:
        self._order += 1
        heapq.heappush(self._ends, (at, self._order, j, self._attempt[j], kind))

    def _stop(self, j: int, t: float) -> None:
        """Give back what running job ``j`` holds and record its usage."""
        job = self.jobs[j]
        running = self._running.pop(j)
        self._ran(running)
        if running.expected_end is not None and not running.preempting:
            self._unend(running.expected_end, j)
        for placement in running.placements:
            self._hold(placement, -1)
        self._charge(job, -1)
        k = self._tenant_no[job.tenant]
        self._history[k] = accrue(
            self._history[k], job.total, running.started_at, t, self._policy.half_life_s
        )
        total = job.total
        self._attained[j] += gpu_weight(total.gpu, total.cpu_milli) * (t - running.started_at)
        self.result.ran[j] += t - running.started_at

    def _finish(self, j: int, t: float) -> None:
        self._stop(j, t)
        self.result.finish[j] = t
        self.result.outcome[j] = Outcome.TIMED_OUT if self.jobs[j].times_out else Outcome.SUCCEEDED
        self._done += 1
        if self.progress is not None and self._done % 1000 == 0:
            self.progress(self._done, len(self.jobs), t)

    def _preempt(self, j: int, preemptor: str, t: float) -> None:
        """Tell running job ``j`` to stop (it stops ``preemption_grace_s`` later)."""
        running = self._running.get(j)
        if running is None or running.preempting:
            raise RuntimeError(
                f"the scheduler preempted job {self.jobs[j].id}, which is not running"
            )
        self._ran(running)
        self._runs(j, replace(running, preempting=True, preempted_for=preemptor))
        self._preempted_by[j] = self._preempted_by[j] | {preemptor}
        if running.expected_end is not None:
            self._unend(running.expected_end, j)
        self.result.evictions.append((running.id, preemptor))
        self._stall_log[j] = self._stall_log.get(j, 0) + 1
        self._attempt[j] += 1  # its end event is stale now
        self._push(t + self.policy.preemption_grace_s, j, _STOP)

    def _runs(self, j: int, running: RunningJob) -> None:
        """``running`` is job ``j`` from now on (``Snapshot.running_since`` tells the next pass)."""
        self._running[j] = running
        self._running_dirty = True
        self._began[id(running)] = running

    def _ran(self, running: RunningJob) -> None:
        """``running`` is out of the running jobs (the caller took it out)."""
        self._running_dirty = True
        if self._began.pop(id(running), None) is None:
            self._stopped.append(running)

    def _restart_overhead(self, j: int) -> float:
        own = self.jobs[j].restart_overhead
        return self.policy.restart_overhead_s if own is None else own

    def _unend(self, end: float, j: int) -> None:
        ends = self._by_end
        del ends[bisect_left(ends, (end, j))]

    def _requeue(self, j: int, t: float) -> None:
        """A preempted job has stopped: back to the queue, keeping its last checkpoint."""
        started = self._running[j].started_at
        self._stop(j, t)
        result = self.result
        overhead = self._restart_overhead(j) if result.preemptions[j] else 0.0
        done = min(self._left[j], max(0.0, t - started - overhead))
        interval = self.jobs[j].checkpoint_interval
        if interval is None:
            interval = self.policy.checkpoint_interval_s
        saved = math.floor(done / interval) * interval if interval > 0 else 0.0
        self._left[j] -= saved
        result.lost[j] += (t - started) - saved
        result.preemptions[j] += 1
        self._enqueue(j, self._pending_job(j))

    def _hold(self, placement: TaskPlacement, sign: int) -> None:
        """Allocate (``sign=1``) or release (``-1``) one task's resources on its node."""
        k = self._node_no[placement.node]
        state = self._states[k]
        res = placement.resources
        devices = frozenset(placement.gpu_indices)
        if sign > 0:
            allocated = state.allocated + res
            if not allocated.fits_in(state.node.capacity) or devices & state.busy_gpus:
                raise RuntimeError(
                    f"the scheduler over-committed node {placement.node}: "
                    f"{allocated.describe()} of {state.node.capacity.describe()}"
                )
            self._states[k] = NodeState(state.node, allocated, state.busy_gpus | devices)
            self._room.change(k, Resources(-res.cpu_milli, -res.memory, -res.gpu))
        else:
            allocated = state.allocated - res
            self._states[k] = NodeState(state.node, allocated, state.busy_gpus - devices)
            self._room.change(k, res)
        self._nodes_changed.add(k)
        self._sampled_pools.add(self._node_pool[k])
        pool = self._pool_alloc[self._node_pool[k]]
        pool[0] += sign * res.cpu_milli
        pool[1] += sign * res.memory
        pool[2] += sign * res.gpu

    def _charge(self, job: TraceJob, sign: int) -> None:
        total = job.total
        usage = self._usage[job.tenant]
        usage[0] += sign * total.cpu_milli
        usage[1] += sign * total.memory
        usage[2] += sign * total.gpu
        tenant = self._tenant_no[job.tenant]
        self._dirty_tenants.add(tenant)
        self._sampled_tenants.add(tenant)

    def _record(self, t: float) -> None:
        """A sample of the timeline: what changed since the last one (``timeline.py``)."""
        waiting, usage, tenants = self._waiting_by_tenant, self._usage, self._tenants
        changed = [(i, waiting[i], *usage[tenants[i].name]) for i in sorted(self._sampled_tenants)]
        pools = [(p, *self._pool_alloc[p]) for p in sorted(self._sampled_pools)]
        self.result.timeline.record(t, changed, pools)
        self._sampled_tenants.clear()
        self._sampled_pools.clear()


class _ByEnd:
    """The running jobs of ``keys`` ((expected end, job number), sorted), as they are now."""

    __slots__ = ("keys", "running")

    def __init__(self, keys: list[tuple[float, int]], running: dict[int, RunningJob]) -> None:
        self.keys = keys
        self.running = running

    def __iter__(self) -> Iterator[RunningJob]:
        running = self.running
        for _, j in self.keys:
            yield running[j]


def simulate(
    jobs: Sequence[TraceJob],
    cluster: ClusterSpec,
    policy: PolicySpec = FIFO,
    *,
    tick_s: float = 0.0,
    progress: Progress | None = None,
    stall_passes: int = STALL_PASSES,
) -> SimRun:
    """Replay ``jobs`` on ``cluster`` under ``policy`` and return what happened."""
    return Simulation(
        jobs, cluster, policy, tick_s=tick_s, progress=progress, stall_passes=stall_passes
    ).run()
