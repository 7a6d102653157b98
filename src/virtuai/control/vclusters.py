"""The virtual-cluster loop: make the recorded state of every cluster true on this machine.

Each step fetches rows in a short read, calls the runtime with no transaction
open, and records the outcome with a compare-and-set on the state it read
(``switch_vc_state``), so a user's request racing the loop never gets lost and
a crash between any two lines is finished by the next tick:

- ``build_admitted``: ``creating``/``resuming`` clusters the scheduler has
  placed are built (``runtime.create``) or started again on their new
  placement (``runtime.resume``: remap).  Both are idempotent, so a build
  interrupted by a crash is simply repeated.  A failed build is rolled back by
  the runtime; the cluster goes to ``failed`` (creating) or back to
  ``suspended`` (resuming), with the reason, and its placement is released.
- ``suspend_requested``: the cluster's jobs are preempted (checkpoint signal,
  grace, requeue: the life cycle's ``preempting`` mechanics); once none holds
  resources, ``runtime.suspend`` stops the nodes (their upper layers and
  ``/shared`` stay on disk) and the placement goes back to the pool.
- ``delete_requested``: the cluster's jobs are cancelled; once all have ended,
  ``runtime.delete`` removes everything and the row stays as ``deleted``.
- ``reconcile``: at the first tick and every ``reconcile_interval_s``,
  ``runtime.reconcile`` brings running and suspended clusters back to their
  recorded state (after ``kill -9`` of the server, lost kernel objects, a
  reboot), and what the nodes look like is recorded for ``virtuai vc show``.
- jobs inside running clusters are scheduled onto the clusters' own nodes
  (``control.vcjobs``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.vcjobs import fail_jobs_of, schedule_vc_jobs
from virtuai.domain.clock import Clock
from virtuai.domain.vcluster import VcState
from virtuai.domain.workload import JobState
from virtuai.errors import VirtuaiError
from virtuai.store.db import read_session, transaction
from virtuai.store.inventory import HOLDING_STATES, placement_from_json
from virtuai.store.models import JobRow, TenantRow, VirtualClusterRow
from virtuai.store.transitions import (
    request_cancel,
    switch_job_state,
    switch_vc_state,
    update_vc_if_state,
)
from virtuai.vcruntime import (
    DesiredState,
    NodeSpec,
    ReconcileReport,
    VcRuntime,
    VcSpec,
    VcStatus,
)

log = logging.getLogger(__name__)

UNFINISHED_JOB_STATES = [s.value for s in JobState if not s.is_finished()]


@dataclass(frozen=True, slots=True)
class VcLoopConfig:
    reconcile_interval_s: float = 10.0  # 0: at every tick
    stop_grace_s: float = 10.0  # SIGTERM -> SIGKILL of what still runs in a node


@dataclass(frozen=True, slots=True)
class _Work:
    vc_id: int
    state: VcState
    name: str
    spec: VcSpec


def spec_of(vc: VirtualClusterRow, tenant: str) -> VcSpec:
    """The runtime's view of a cluster: its identity and, per node, what the scheduler placed
    (while it has no placement, nodes without limits: only their number matters then)."""
    placed = placement_from_json(vc.placement)
    nodes = tuple(
        NodeSpec(p.resources.cpu_milli, p.resources.memory, p.gpu_indices) for p in placed
    )
    return VcSpec(
        id=vc.runtime_id,
        name=vc.name,
        tenant=tenant,
        subnet=vc.subnet,
        nodes=nodes or (NodeSpec(),) * vc.nodes,
        image=vc.image,
        gateway=vc.gateway,
    )


def observed_nodes(status: VcStatus) -> list[dict[str, Any]]:
    return [
        {
            "index": n.index,
            "hostname": n.hostname,
            "address": n.address,
            "state": n.state.value,
            "problems": list(n.problems),
        }
        for n in status.nodes
    ]


class VcLoop:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: VcRuntime,
        clock: Clock,
        config: VcLoopConfig | None = None,
    ) -> None:
        self._sessions = sessions
        self._runtime = runtime
        self._clock = clock
        self._config = config or VcLoopConfig()
        self._reconciled_at: dt.datetime | None = None  # None: reconcile at the first tick

    def tick(self) -> None:
        self.build_admitted()
        self.suspend_requested()
        self.delete_requested()
        now = self._clock.now()
        interval = dt.timedelta(seconds=self._config.reconcile_interval_s)
        if self._reconciled_at is None or now - self._reconciled_at >= interval:
            self.reconcile()
            self._reconciled_at = now
        self.schedule_jobs()

    # -- reading -----------------------------------------------------------------------------

    def _fetch(self, states: Sequence[VcState], *, admitted: bool | None = None) -> list[_Work]:
        with read_session(self._sessions) as session:
            query = (
                select(VirtualClusterRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == VirtualClusterRow.tenant_id)
                .where(VirtualClusterRow.state.in_([s.value for s in states]))
                .order_by(VirtualClusterRow.id)
            )
            if admitted is not None:
                column = VirtualClusterRow.admitted_at
                query = query.where(column.is_not(None) if admitted else column.is_(None))
            work = [
                _Work(vc.id, VcState(vc.state), vc.name, spec_of(vc, tenant))
                for vc, tenant in session.execute(query)
            ]
            session.rollback()
        return work

    def _record(
        self, vc_id: int, state: VcState, apply: Callable[[Session, VirtualClusterRow], object]
    ) -> None:
        """Run ``apply`` on the row if it is still in ``state`` (else the loop re-reads later)."""
        with transaction(self._sessions) as session:
            vc = session.get(VirtualClusterRow, vc_id)
            if vc is not None and vc.state == state.value:
                apply(session, vc)

    # -- creating / resuming -----------------------------------------------------------------

    def build_admitted(self) -> None:
        for work in self._fetch([VcState.CREATING, VcState.RESUMING], admitted=True):
            try:
                if work.state is VcState.CREATING:
                    status = self._runtime.create(work.spec)
                else:
                    status = self._runtime.resume(work.spec)
            except VirtuaiError as error:
                log.warning("virtual cluster %s: %s", work.name, error.message)
                self._record(work.vc_id, work.state, self._build_failed(work, error.message))
                continue
            self._record(work.vc_id, work.state, self._now_running(status))

    def _now_running(self, status: VcStatus) -> Callable[[Session, VirtualClusterRow], object]:
        def apply(session: Session, vc: VirtualClusterRow) -> None:
            now = self._clock.now()
            hosts = sorted({p["node"] for p in vc.placement})
            switch_vc_state(
                session,
                vc,
                VcState.RUNNING,
                reason=f"running on {', '.join(hosts)}",
                now=now,
                observed=observed_nodes(status),
                observed_at=now,
            )

        return apply

    def _build_failed(
        self, work: _Work, message: str
    ) -> Callable[[Session, VirtualClusterRow], object]:
        def apply(session: Session, vc: VirtualClusterRow) -> None:
            now = self._clock.now()
            released: dict[str, Any] = {"placement": [], "admitted_at": None, "observed": []}
            if work.state is VcState.CREATING:
                if switch_vc_state(
                    session, vc, VcState.FAILED, reason=message, now=now, **released
                ):
                    fail_jobs_of(session, vc, f"its virtual cluster failed: {message}", now)
            else:
                switch_vc_state(
                    session, vc, VcState.SUSPENDED, reason=f"resume failed: {message}", now=now,
                    **released,
                )  # fmt: skip

        return apply

    # -- suspending --------------------------------------------------------------------------

    def suspend_requested(self) -> None:
        for work in self._fetch([VcState.SUSPENDING]):
            if self._jobs_still_hold(work, preempt=True):
                continue
            try:
                self._runtime.suspend(work.spec.id, self._config.stop_grace_s)
            except VirtuaiError as error:
                log.warning("suspending virtual cluster %s: %s", work.name, error.message)
                self._record(
                    work.vc_id,
                    work.state,
                    _note(f"suspend failed, retrying: {error.message}", self._clock.now()),
                )
                continue
            status = self._runtime.observe(work.spec.id)

            def apply(session: Session, vc: VirtualClusterRow, status: VcStatus = status) -> None:
                now = self._clock.now()
                switch_vc_state(
                    session,
                    vc,
                    VcState.SUSPENDED,
                    reason="suspended: its nodes are stopped, their disks kept",
                    now=now,
                    placement=[],
                    admitted_at=None,
                    observed=observed_nodes(status),
                    observed_at=now,
                )

            self._record(work.vc_id, work.state, apply)

    def _jobs_still_hold(self, work: _Work, *, preempt: bool) -> bool:
        """Tell the cluster's jobs to stop (preempt or cancel); whether any still holds nodes."""
        with transaction(self._sessions) as session:
            now = self._clock.now()
            states = HOLDING_STATES if preempt else UNFINISHED_JOB_STATES
            jobs = list(
                session.scalars(
                    select(JobRow).where(JobRow.vc_id == work.vc_id, JobRow.state.in_(states))
                )
            )
            why = f"virtual cluster {work.name} is being {'suspended' if preempt else 'deleted'}"
            busy = False
            for job in jobs:
                if preempt:
                    busy |= _preempt(session, job, why, now)
                else:
                    busy |= request_cancel(session, job, now=now, why=why)
            return busy

    # -- deleting ----------------------------------------------------------------------------

    def delete_requested(self) -> None:
        for work in self._fetch([VcState.DELETING]):
            if self._jobs_still_hold(work, preempt=False):
                continue
            try:
                self._runtime.delete(work.spec.id, self._config.stop_grace_s)
            except VirtuaiError as error:
                log.warning("deleting virtual cluster %s: %s", work.name, error.message)
                self._record(
                    work.vc_id,
                    work.state,
                    _note(f"delete failed, retrying: {error.message}", self._clock.now()),
                )
                continue

            def apply(session: Session, vc: VirtualClusterRow) -> None:
                now = self._clock.now()
                switch_vc_state(
                    session,
                    vc,
                    VcState.DELETED,
                    reason="deleted: nodes, network and disks removed",
                    now=now,
                    placement=[],
                    admitted_at=None,
                    observed=[],
                    observed_at=now,
                    deleted_at=now,
                )

            self._record(work.vc_id, work.state, apply)

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Running and suspended clusters made as recorded again; what their nodes look like."""
        for work in self._fetch([VcState.RUNNING, VcState.SUSPENDED]):
            desired = (
                DesiredState.RUNNING if work.state is VcState.RUNNING else DesiredState.SUSPENDED
            )
            spec = work.spec
            if desired is DesiredState.SUSPENDED:  # keep the placement it was suspended with
                recorded = self._runtime.record(spec.id)
                spec = recorded[0] if recorded is not None else spec
            try:
                report = self._runtime.reconcile(spec, desired)
                status = self._runtime.observe(work.spec.id)
            except VirtuaiError as error:
                log.warning("reconciling virtual cluster %s: %s", work.name, error.message)
                self._record(
                    work.vc_id,
                    work.state,
                    _note(f"repair failed, retrying: {error.message}", self._clock.now()),
                )
                continue
            if report.actions:
                log.info("virtual cluster %s reconciled: %s", work.name, "; ".join(report.actions))
            self._record(work.vc_id, work.state, _reconciled(report, status, self._clock.now()))

    # -- jobs inside clusters ----------------------------------------------------------------

    def schedule_jobs(self) -> None:
        with transaction(self._sessions) as session:
            schedule_vc_jobs(session, self._clock.now())


def _note(reason: str, now: dt.datetime) -> Callable[[Session, VirtualClusterRow], object]:
    """Say why the cluster is not progressing (once: an event only when the reason changes)."""

    def apply(session: Session, vc: VirtualClusterRow) -> None:
        if vc.reason != reason:
            update_vc_if_state(session, vc, reason=reason, now=now)

    return apply


def _reconciled(
    report: ReconcileReport, status: VcStatus, now: dt.datetime
) -> Callable[[Session, VirtualClusterRow], object]:
    def apply(session: Session, vc: VirtualClusterRow) -> None:
        observed = observed_nodes(status)
        if report.actions:
            reason = "repaired: " + "; ".join(report.actions)
            update_vc_if_state(
                session, vc, reason=reason, now=now, observed=observed, observed_at=now
            )
        elif vc.reason.startswith("repair failed"):
            update_vc_if_state(
                session, vc, reason="repaired", now=now, observed=observed, observed_at=now
            )
        else:
            update_vc_if_state(
                session, vc, now=now, event=False, observed=observed, observed_at=now
            )

    return apply


def _preempt(session: Session, job: JobRow, why: str, now: dt.datetime) -> bool:
    """Stop a job of a cluster being suspended as a preemption does; whether it still holds."""
    state = JobState(job.state)
    if state is JobState.ADMITTED:
        switch_job_state(
            session, job, JobState.PENDING, reason=f"requeued: {why}", now=now,
            placement=[], admitted_at=None, master_port=None,
        )  # fmt: skip
        return False
    if state in (JobState.STARTING, JobState.RUNNING):
        switch_job_state(session, job, JobState.PREEMPTING, reason=why, now=now)
    return True
