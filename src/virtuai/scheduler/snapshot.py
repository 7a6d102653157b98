"""The scheduler's input (a snapshot of the world) and output (decisions).

The control plane builds a ``Snapshot`` from the database, the simulator
builds one from a trace; both hand it to the same pure ``schedule()``.  Every
field added after v1 has a default that keeps v1's behaviour, so a snapshot of
nodes, tenants and pending jobs alone is scheduled exactly as before.
``docs/scheduling.md`` says where the control plane takes each value from.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from virtuai.domain.resources import ZERO, Node, Resources
from virtuai.domain.tenancy import PoolQuota, Quota
from virtuai.domain.workload import TaskPlacement

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class NodeState:
    node: Node
    allocated: Resources = ZERO
    busy_gpus: frozenset[int] = frozenset()
    # False for a cordoned, draining or unreachable machine: what runs there stays in the
    # books, but nothing new is placed on it (it still counts for "can this ever run?").
    accepting: bool = True
    # Fixed ports held on the node by admitted work (``TaskPlacement.host_ports``).
    ports: frozenset[int] = frozenset()

    @property
    def free(self) -> Resources:
        return self.node.capacity - self.allocated


@dataclass(frozen=True, slots=True)
class HistoricalUsage:
    """A tenant's past usage in resource-seconds, decayed (policy's half-life) to ``as_of``.

    The scheduler decays it further to ``Snapshot.now``, so the caller may keep
    one running value per tenant and update it only when usage is recorded
    (``fairshare.accrue`` does that update).  Units: millicore-seconds,
    byte-seconds and GPU-seconds.
    """

    cpu_milli_s: float = 0.0
    memory_s: float = 0.0
    gpu_s: float = 0.0
    as_of: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantState:
    name: str
    quota: Quota
    # What the tenant's admitted, not yet finished work holds now (all pools).  When
    # ``Snapshot.running`` is given the scheduler uses the larger of this and the sum of
    # the tenant's running jobs, resource by resource.
    usage: Resources = ZERO
    # Quota entries per pool; an entry for ``ANY_POOL`` replaces ``quota`` as the tenant-wide one.
    quotas: tuple[PoolQuota, ...] = ()
    cohort: str | None = None  # tenants of one cohort borrow each other's unused quota
    weight: float = 1.0  # fair-share weight (relative to the other tenants')
    history: HistoricalUsage = HistoricalUsage()


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job waiting for admission. ``seq`` breaks ties deterministically (submit order)."""

    id: str
    tenant: str
    priority: int
    submitted_at: float
    seq: int
    per_task: Resources
    tasks: int = 1
    pool: str | None = None  # restrict to one pool; None = any
    walltime_s: int | None = None  # its time limit; backfill needs it (None: unbounded)
    preemptible: bool = True  # its priority class's ``preemptible``
    # It preempted jobs in an earlier pass (it was a ``Preemption.preemptor_id``) and has
    # not started since: it goes first, so that the room its victims freed is its own.
    nominated: bool = False
    # Service it attained in earlier attempts (GPU-seconds; ``las.gpu_weight``): the
    # least-attained-service order (``Policy.las_thresholds_gpu_s``) reads it.
    attained_gpu_s: float = 0.0
    # The jobs whose preemptions stopped this one, in any earlier attempt: it never
    # preempts them back.  Only the last one is not enough: A preempts B, C preempts B,
    # then B (its last preemptor C) would preempt A, and A would in turn preempt B.
    preempted_by: frozenset[str] = frozenset()
    # Targeting (node class, labels): the only nodes it may use; None = any node.
    allowed_nodes: frozenset[str] | None = None
    # Fixed TCP ports every task holds on its node (a service's ``port: N``): a node where
    # one of them is held already is not for it, and no two of its tasks share a node.
    host_ports: frozenset[int] = frozenset()

    @property
    def total(self) -> Resources:
        return self.per_task.times(self.tasks)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job that holds resources now: admitted, starting, running or preempting.

    ``expected_end`` is ``started_at + walltime`` (``None``: unknown, never ends
    as far as backfill can tell).  ``preempting`` marks a job told to stop by an
    earlier preemption and not stopped yet; ``preempted_for`` is the id of the
    pending job it was preempted for (``Preemption.preemptor_id``), so that the
    preemptor waits for it instead of preempting again.
    """

    id: str
    tenant: str
    priority: int
    placements: tuple[TaskPlacement, ...]
    started_at: float = 0.0
    expected_end: float | None = None
    preemptible: bool = True
    preempting: bool = False
    preempted_for: str | None = None
    seq: int = 0  # submission order (``PendingJob.seq``): breaks ties of ``started_at``
    attained_gpu_s: float = 0.0  # service of its earlier attempts (``PendingJob``'s)
    preempted_by: frozenset[str] = frozenset()  # as ``PendingJob``'s, kept while it runs

    @property
    def total(self) -> Resources:
        placements = self.placements
        if len(placements) == 1:  # most jobs: no arithmetic (this runs several times a pass)
            return placements[0].resources
        cpu = memory = gpu = 0
        for placement in placements:
            r = placement.resources
            cpu += r.cpu_milli
            memory += r.memory
            gpu += r.gpu
        return Resources(cpu, memory, gpu) if placements else ZERO


@dataclass(frozen=True, slots=True)
class Policy:
    """Which scheduling rules apply. The default is v1: strict priority-FIFO, no preemption.

    Each switch is independent, so the simulator can compare them one by one.
    """

    # Order jobs of equal priority by their tenant's fair-share factor (weighted
    # dominant-resource share of decayed usage and current allocation), not by
    # submission time alone.
    fair_share: bool = False
    # EASY backfill: later jobs may start if they do not delay the first blocked job.
    backfill: bool = False
    # Preempt borrowers to give lenders their nominal quota back, and lower-priority
    # preemptible jobs of the same tenant for higher-priority ones.
    preemption: bool = False
    # Tenants of one cohort may borrow each other's unused nominal quota.
    borrowing: bool = True
    # Historical usage loses half its weight every ``half_life_s`` seconds (Slurm's
    # PriorityDecayHalfLife).
    half_life_s: float = 7 * DAY_S
    # Fair-share usage = (1 - w) * decayed history + w * current allocation, both as
    # fractions of the cluster; 0 counts history only, 1 current allocation only.
    allocation_weight: float = 0.5
    # At most this many candidate victims are examined per preemptor (bounds the cost
    # of a pass; a preemptor that needs more preempts nothing).
    max_victim_candidates: int = 256
    # A running job is not preempted (for any reason) before it has run this long in
    # its current attempt: every preemption buys at least this much progress.
    min_run_s: float = 0.0
    # Least attained service (``las.py``): ascending GPU-second boundaries of the levels
    # within a priority; empty: off.  Lower levels go first within a tenant and may
    # preempt running jobs of higher levels of the same priority.
    las_thresholds_gpu_s: tuple[float, ...] = ()
    # Starvation guard: a waiting job counts as level 0 once it waited this many times
    # as long as it ran (and at least ``starvation_min_s``); 0: off.
    starvation_factor: float = 0.0
    starvation_min_s: float = 0.0
    # With LAS and backfill: a job that backfill would start within this long (its
    # reservation, were it the head now) preempts no job for its level, since the victim
    # would lose work and wait again, often longer; 0: LAS preempts whenever it may.
    las_patience_s: float = 0.0
    # Shortest first: within a priority (and LAS level), jobs go by submission time plus
    # their time limit, capped at this (a job without one counts the cap), instead of by
    # submission time (``queue.due_by``): a burst that meets a full cluster runs its short
    # jobs first, and a job is overtaken only by jobs due before it (no starvation).
    # 0: off, submission order.
    short_first_cap_s: float = 0.0
    # EASY backfill: of the nodes that will have room when the head's reservation starts,
    # reserve those whose room comes last (``backfill.reserve``), so that nodes free
    # earlier are not held idle for it and stay usable by other jobs meanwhile (its start
    # is the same).  False: the tightest nodes, ties by name.
    reserve_late: bool = False
    # Backfill reservations per pass: 1 is EASY (the head's only); k > 1 also reserves for
    # the next k - 1 jobs blocked for capacity, each around the earlier ones, and a job
    # may pass them only if it delays none (conservative backfill to depth k).
    reserve_depth: int = 1
    # LAS victims: a running gang (on several nodes) of a tenant whose fair-share ratio
    # (usage over share) is above this may be preempted for a smaller job (an exception to
    # "never a bigger job for a smaller one"): a burst of wide gangs beyond the tenant's
    # share; what it frees beyond the preemptor is spare room for the next blocked jobs.
    # 0: off.
    gang_victim_ratio: float = 0.0
    # Capacity reasons that say how fragmented free room is spread (a scan of the
    # nodes per pass); the simulator, which shows no reasons, turns it off.
    detailed_reasons: bool = True
    # False: the caller reads only admissions, preemptions and ``NEVER`` (the simulator),
    # so only ``NEVER`` jobs get a ``Blocked``, and a pass without preemption or quotas
    # may stop as soon as no job left in the queue can be admitted or be ``NEVER``
    # (``core._Stop``).
    report_blocked: bool = True

    @classmethod
    def fifo(cls) -> Policy:
        """v1: priority, then submission time; strict head-of-line blocking."""
        return cls()

    @classmethod
    def fair(cls, *, half_life_s: float = 7 * DAY_S) -> Policy:
        """Everything on: fair share, EASY backfill, preemption, borrowing."""
        return cls(fair_share=True, backfill=True, preemption=True, half_life_s=half_life_s)

    @classmethod
    def las(cls, *, half_life_s: float = 7 * DAY_S) -> Policy:
        """``fair()`` plus least attained service within a tenant (``las.py``), 3 levels
        (8 and 32 GPU-hours), a starvation guard, an hour's minimum run, no LAS preemption
        for a job that backfill would start within 12 hours, shortest (time limit) first
        within a level, capped at 3 days, the head's reservation on the nodes whose
        room comes last, and gangs of a tenant at twice its fair share preemptible by
        smaller jobs (tuned on Philly-shaped load: ``docs/benchmarks.md``)."""
        return cls(
            fair_share=True,
            backfill=True,
            preemption=True,
            half_life_s=half_life_s,
            min_run_s=3600.0,
            las_thresholds_gpu_s=(8 * 3600.0, 32 * 3600.0),
            starvation_factor=4.0,
            starvation_min_s=3600.0,
            las_patience_s=12 * 3600.0,
            short_first_cap_s=3 * DAY_S,
            reserve_late=True,
            gang_victim_ratio=2.0,
        )

    def lets_borrow(self, job: PendingJob) -> bool:
        """Whether ``job`` may borrow from its cohort: where the policy preempts, a job
        that cannot be preempted never does (a lender must always get its quota back)."""
        return job.preemptible or not self.preemption


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[NodeState, ...]
    tenants: tuple[TenantState, ...]
    pending: tuple[PendingJob, ...]
    running: tuple[RunningJob, ...] = ()
    now: float = 0.0  # seconds, on the same clock as submitted_at, started_at, expected_end
    policy: Policy = Policy()
    # The caller vouches that every running job's tenant is in ``tenants`` and that each
    # ``TenantState.usage`` already is the sum of its running jobs (the simulator keeps
    # these sums as jobs start and stop): the scheduler then does not add up ``running``
    # again, which is O(running jobs) per pass.  Decisions are the same either way.
    usage_complete: bool = False
    # The caller vouches that these are exactly the ``running`` jobs that have an
    # ``expected_end`` and are not preempting, in ascending ``expected_end`` order (the
    # simulator keeps them so as jobs start and stop; re-iterable, read lazily): backfill
    # then reads its releases from them instead of ordering ``running`` (``ends.Ends``).
    running_by_end: Iterable[RunningJob] | None = None
    # The caller vouches that ``pending`` is the ``pending`` tuple of its previous snapshot
    # (the first item, that very object) without the jobs of the second and with those of
    # the third (``PendingJob`` objects; the simulator keeps them as jobs come and go): the
    # queues kept from that pass (``waiting.Waiting``) are then updated from these alone,
    # not by comparing the whole queue.  Decisions are the same either way.
    pending_since: (
        tuple[tuple[PendingJob, ...], tuple[PendingJob, ...], tuple[PendingJob, ...]] | None
    ) = None
    # The same for ``running`` (``RunningJob`` objects; the simulator keeps one while its
    # job runs, and puts a new one in its place when the job is told to stop): the victim
    # index kept from that pass (``victimindex.VictimIndex``) is then updated from these
    # alone.  Decisions are the same either way.
    running_since: (
        tuple[tuple[RunningJob, ...], tuple[RunningJob, ...], tuple[RunningJob, ...]] | None
    ) = None
    # The same for ``nodes``: the previous snapshot's ``nodes`` tuple (that very object) and
    # every position whose state may be another object now (the simulator notes the nodes
    # it changes): the cluster kept from that pass (``placement.Cluster.reuse``) then
    # reloads these alone instead of comparing every node.  Decisions are the same either way.
    nodes_since: tuple[tuple[NodeState, ...], frozenset[int]] | None = None


class BlockKind(enum.StrEnum):
    QUOTA = "quota"  # the tenant's quota is full for now
    CAPACITY = "capacity"  # not enough free resources on the nodes now
    QUEUE = "queue"  # a job ahead of it in the queue is waiting for, or has reserved, resources
    NEVER = "never"  # cannot run even on an empty cluster within its quota
    PREEMPTION = "preemption"  # waiting for jobs preempted for it to stop


@dataclass(frozen=True, slots=True)
class Admission:
    job_id: str
    placements: tuple[TaskPlacement, ...]


@dataclass(frozen=True, slots=True)
class Blocked:
    job_id: str
    kind: BlockKind
    reason: str  # plain words, shown to the user as the pending reason
    position: int = 0  # 1-based place among the jobs still waiting
    expected_start: float | None = None  # when it should start (backfill's reservation)


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop ``job_id`` (a running job) so that ``preemptor_id`` (a pending job) can start."""

    job_id: str
    preemptor_id: str
    reason: str  # plain words, for the victim's events and requeue reason


@dataclass(frozen=True, slots=True)
class Decisions:
    admitted: tuple[Admission, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    preempted: tuple[Preemption, ...] = ()
