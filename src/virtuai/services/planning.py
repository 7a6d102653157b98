"""Questions answered by the scheduler's own code, so the answers never disagree with it:
can this job ever run (at submit), what would happen to it now (``virtuai plan``), and
how the tenants stand in fair share (``virtuai fairshare``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from virtuai.domain.arrays import MAX_ARRAY_SIZE
from virtuai.domain.resources import Resources
from virtuai.domain.units import format_duration
from virtuai.domain.workload import JobState, PriorityClass
from virtuai.errors import InvalidRequest, Unschedulable
from virtuai.scheduler import FairShare, Plan, cluster_capacity, fair_share, never_reason, plan
from virtuai.scheduler.snapshot import NodeState, PendingJob, Policy, Snapshot, TenantState
from virtuai.services.access import Caller
from virtuai.store.inventory import load_node_states, node_from_row
from virtuai.store.models import JobRow, NodeRow, TenantRow
from virtuai.store.snapshot import build_snapshot, tenant_states, waiting_vcs
from virtuai.store.tenancy import pool_quotas, quota_of

PROBE_ID = "planned"


@dataclass(frozen=True, slots=True)
class SchedulingRules:
    """The live scheduler's policy and priority classes, as the API sees them."""

    policy: Policy
    priority_classes: Mapping[str, PriorityClass]
    # Submission limits (settings `limits.*`): nonsense is refused at submit, not later.
    max_walltime_s: int = 365 * 86400  # the default of `limits.max_walltime_s`
    max_array_size: int = MAX_ARRAY_SIZE

    def check_walltime(self, seconds: int) -> None:
        if seconds > self.max_walltime_s:
            raise InvalidRequest(
                f"time: at most {format_duration(self.max_walltime_s)} on this platform",
                field="time",
            )

    # Per node class, the longest time limit a job placed there may have (HPC4AI: gpu 12h).
    max_walltime_by_class: Mapping[str, int] = field(default_factory=dict)

    def priority(self, name: str) -> PriorityClass:
        found = self.priority_classes.get(name)
        if found is None:
            raise InvalidRequest(
                f"unknown priority {name!r}; use one of {', '.join(self.priority_classes)}",
                field="priority",
            )
        return found

    @property
    def preemptible(self) -> dict[str, bool]:
        return {c.name: c.preemptible for c in self.priority_classes.values()}


def probe(
    tenant: str,
    per_task: Resources,
    tasks: int,
    walltime_s: int,
    priority: PriorityClass,
    now: dt.datetime,
    allowed_nodes: frozenset[str] | None = None,
    host_ports: frozenset[int] = frozenset(),
) -> PendingJob:
    """The job as the scheduler would see it if it were submitted now: last of its class."""
    return PendingJob(
        allowed_nodes=allowed_nodes,
        host_ports=host_ports,
        id=PROBE_ID,
        tenant=tenant,
        priority=priority.value,
        submitted_at=now.timestamp(),
        seq=2**62,
        per_task=per_task,
        tasks=tasks,
        walltime_s=walltime_s,
        preemptible=priority.preemptible,
    )


def snapshot_now(
    session: Session, rules: SchedulingRules, now: dt.datetime, *, with_queue: bool
) -> Snapshot:
    """The scheduler's view now; ``with_queue`` adds the pending jobs (for queue positions).

    Jobs held by unmet dependencies are left out, as the scheduling loop does;
    a job whose dependencies are met but not yet seen by the loop is counted.
    """
    pending: list[JobRow] = []
    if with_queue:
        pending = [
            job
            for job in session.scalars(
                select(JobRow).where(
                    JobRow.state == JobState.PENDING.value,
                    JobRow.cancel_requested_at.is_(None),
                    JobRow.vc_id.is_(None),
                )
            )
            if not job.dependencies
        ]
    return build_snapshot(
        session,
        now=now,
        policy=rules.policy,
        preemptible=rules.preemptible,
        pending=pending,
        pending_vcs=waiting_vcs(session) if with_queue else (),
        max_walltime_by_class=rules.max_walltime_by_class,
    )


def capacity_snapshot(
    session: Session,
    rules: SchedulingRules,
    now: dt.datetime,
    node_rows: Iterable[NodeRow] | None = None,
) -> Snapshot:
    """Nodes and quotas only: all that "can it ever run" depends on.

    Whether a job can *ever* run does not depend on what runs now, so the
    submit path reads neither allocations, nor usage, nor running jobs: two
    small tables instead of the whole scheduler's view.  ``node_rows``: every
    node's row, read already in this transaction (the submit path has them).
    """
    if node_rows is None:
        nodes: Iterable[NodeRow] = session.scalars(
            select(NodeRow).where(NodeRow.schedulable.is_(True)).order_by(NodeRow.name)
        )
    else:
        nodes = sorted((row for row in node_rows if row.schedulable), key=lambda r: r.name)
    tenants = session.scalars(select(TenantRow).options(selectinload(TenantRow.quotas)))
    return Snapshot(
        nodes=tuple(NodeState(node=node_from_row(row)) for row in nodes),
        tenants=tuple(
            TenantState(name=t.name, quota=quota_of(t), quotas=pool_quotas(t), cohort=t.cohort)
            for t in tenants
        ),
        pending=(),
        now=now.timestamp(),
        policy=rules.policy,
    )


def reject_if_never_runs(
    session: Session,
    rules: SchedulingRules,
    job: PendingJob,
    now: dt.datetime,
    capacity: Snapshot | None = None,
) -> None:
    """A request that can never run is refused at submit instead of waiting forever.

    With cohorts, a job above its tenant's nominal quota but within what it may
    borrow is accepted.  ``capacity``: ``capacity_snapshot`` read already in this
    transaction (the submits of one group commit share it).
    """
    if capacity is None:
        capacity = capacity_snapshot(session, rules, now)
    reason = never_reason(capacity, job)
    if reason is not None:
        raise Unschedulable(reason, field="resources")


def plan_job(session: Session, rules: SchedulingRules, job: PendingJob, now: dt.datetime) -> Plan:
    return plan(snapshot_now(session, rules, now, with_queue=True), job)


def fair_share_rows(
    session: Session, caller: Caller, rules: SchedulingRules, now: dt.datetime
) -> list[FairShare]:
    """Every tenant's standing, computed over all tenants; callers see their own tenants'."""
    tenants = list(session.scalars(select(TenantRow).options(selectinload(TenantRow.quotas))))
    rows = fair_share(
        tenant_states(session, tenants),
        cluster_capacity(load_node_states(session)),
        now=now.timestamp(),
        half_life_s=rules.policy.half_life_s,
        allocation_weight=rules.policy.allocation_weight,
    )
    return [row for row in rows if caller.can_see(row.tenant)]
