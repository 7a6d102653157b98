"""The life-cycle loop: admitted jobs are started, running tasks observed, ended jobs recorded.

Each step reads what it must do from the database, calls drivers with no
transaction open, and records the result in a short transaction of its own.
Every step is idempotent, so the loop may die between any two lines and the
next tick (in this process or after a restart) finishes the work:

- tasks are created for an attempt before anything is launched;
- drivers launch idempotently by task key, so a launch whose handle was not
  recorded is repeated without starting a second process;
- outcomes are recorded once (the update is guarded on ``outcome IS NULL``);
- a job ends through a compare-and-set transition, with its usage records.

A job inside a virtual cluster (``vc_id``) is placed on the cluster's nodes by
``control.vcjobs``; its tasks are launched by the driver of the physical
node hosting each virtual node, with the node's reference as the
``TaskSpec.vnode`` (``VnodeLocator``), in ``/shared`` by default, with
``MASTER_ADDR`` the address of task 0's node.

Several machines: every instance runs this loop as its *node reconciler*
(``host`` = its node's name).  It launches, observes, stops and releases only
the tasks whose ``host`` is its node, starts only the jobs whose task 0 it
hosts (their *home*: it creates the attempt's tasks and picks the rendezvous
port), and records a job's end only for the jobs it is home to.  Its first
step, every pass, kills the tasks of attempts that moved elsewhere (its node
was lost and the leader requeued them) before anything else.  With ``host``
``None`` the loop acts on every task (one machine, tests).

Per-item isolation (``control.isolation``): every driver call has a deadline
and runs on a worker thread; one task whose ``observe`` raises or hangs is
retried with backoff and finally ends with the reason, while the others go
on.  Launches run in parallel; the pass waits for them only briefly
(``launch_wait_s``) and records the late ones at the next pass.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from virtuai.auth.jobtokens import job_token, notebook_secret
from virtuai.control.isolation import GAVE_UP, Backoff, Deadline, DriverTimeout
from virtuai.control.replicaports import ReplicaPorts
from virtuai.control.tasks import ACTIVE_STATES, TaskReconciler
from virtuai.control.vnodes import (
    VC_WORKDIR,
    VnodeLocator,
    VnodeTarget,
    vc_master_port,
    vnode_targets,
)
from virtuai.domain.clock import Clock
from virtuai.domain.environment import task_environment
from virtuai.domain.notebooks import IP_ENV, KIND, SECRET_ENV
from virtuai.domain.services import HOST_ENV
from virtuai.domain.services import KIND as SERVICE
from virtuai.domain.vcluster import VcState
from virtuai.domain.workload import JobState, TaskOutcome, job_outcome
from virtuai.drivers.base import (
    FENCE_MESSAGE,
    Driver,
    DriverBusy,
    Handle,
    TaskResult,
    TaskSpec,
    TemporaryDriverError,
)
from virtuai.drivers.local.ports import port_listened
from virtuai.errors import DriverError, VirtuaiError
from virtuai.store.db import lost_transaction, read_session
from virtuai.store.inventory import placement_from_json
from virtuai.store.lease import loop_transaction
from virtuai.store.models import JobRow, NodeRow, TaskRow, TenantRow, VirtualClusterRow
from virtuai.store.transitions import requeue_next_attempt, switch_job_state
from virtuai.store.usage import record_task_usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    workspaces_dir: Path
    kill_grace_s: int = 30
    half_life_s: float = 7 * 86400.0  # of the fair-share usage recorded when tasks end
    # Job tokens (``auth.jobtokens``): given to each task with the API's URL, so that a
    # job can act on itself (``scontrol requeue``); empty key: none given.
    job_token_key: bytes = b""
    api_url: str = ""
    call_timeout_s: float = 30.0  # a driver call (observe, stop, release) that hangs longer fails
    launch_timeout_s: float = 60.0  # a launch still running after this is retried
    launch_wait_s: float = 0.5  # how long a pass waits for its parallel launches
    retry_base_s: float = 0.5  # first wait after an item failed; doubles per failure
    retry_attempts: int = 5  # failures of one item (timeouts, refusals) before it is ended


@dataclass(frozen=True, slots=True)
class _Launch:
    task_id: int
    spec: TaskSpec
    vnode: VnodeTarget | None = None  # the virtual node it runs in
    problem: str | None = None  # why it cannot be launched at all
    image: str | None = None  # the image whose root it runs over (``submit --image``)
    guarded_port: int | None = None  # a service replica's port: guarded before launch


class LifecycleLoop(TaskReconciler):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        drivers: Mapping[str, Driver],
        clock: Clock,
        config: LifecycleConfig,
        vnodes: VnodeLocator | None = None,
        *,
        host: str | None = None,
        wake: Callable[[], None] | None = None,
        remote_nodes: Callable[[], frozenset[str]] | None = None,
        ports: ReplicaPorts | None = None,
    ) -> None:
        self._sessions = sessions
        # Services' replicas: their ports picked from the reserved range and guarded.
        self._ports = ports
        # Nodes no machine of ours hosts (a Slurm site's): their tasks are driven through
        # the site's driver by the instance that leads, which this callable says.
        self._remote_nodes = remote_nodes or frozenset
        self._drivers = drivers
        self._clock = clock
        self._config = config
        self._vnodes = vnodes  # None: no virtual clusters on this server
        self.host = host  # this instance's node; None: every node (one machine)
        # Called when a launch completes or a task ends: the hook that makes the control
        # loop run again at once, so that freed room is handed out without waiting a period.
        self._wake = wake or (lambda: None)
        self._backoff = Backoff(base_s=config.retry_base_s, attempts=config.retry_attempts)
        self._deadline = Deadline(config.call_timeout_s)
        self._inflight: dict[int, tuple[concurrent.futures.Future[Handle], float, str]] = {}
        self._addresses: dict[str, str] = {}
        # Handles of this node's live tasks, as last observed: what self-fencing kills.
        self._known: dict[int, tuple[str, Handle]] = {}
        self._known_lock = threading.Lock()
        # Tasks released by this process whose ``released`` mark is not committed yet: it
        # goes with the next pass's commit.
        self._unmarked: set[int] = set()
        self._waiting_launches = False

    def tick(self) -> None:
        self.guard_ports()
        self.reap_orphans()
        self.start_admitted()
        self.launch_tasks()
        self.stop_cancelled()
        self.observe_and_finish()

    # ``virtuai up`` runs the two halves of ``tick`` around the scheduler, so that one round
    # turns a slot over: the ends are recorded, the room they free is handed out, and what
    # was admitted is launched, without waiting for a second round.

    def settle(self) -> None:
        """What ended or must stop: before the scheduling pass."""
        self.guard_ports()
        self.reap_orphans()
        self.stop_cancelled()
        self.observe_and_finish()

    def start(self) -> None:
        """What was admitted: after the scheduling pass."""
        self.start_admitted()
        self.launch_tasks()

    def guard_ports(self) -> None:
        """The guarded ports are this machine's live replicas' (at start, then every period)."""
        if self._ports is not None:
            self._ports.tick()

    # -- admitted -> starting --------------------------------------------------------------

    def start_admitted(self) -> None:
        # Most rounds admit nothing: find that out without queueing for the write lock.
        if not self._any_job_in(JobState.ADMITTED):
            return
        with loop_transaction(self._sessions) as session:
            jobs = list(
                session.scalars(select(JobRow).where(JobRow.state == JobState.ADMITTED.value))
            )
            now = self._clock.now()
            for job in jobs:
                if not self._backoff.ready(("start", job.id)):
                    continue
                try:
                    with session.begin_nested():  # one job's failure undoes only its own work
                        self._start_one(session, job, now)
                except Exception as error:
                    if lost_transaction(error):
                        raise
                    why = self._backoff.failed(("start", job.id), error, f"starting job {job.id}")
                    if why is not None:
                        switch_job_state(
                            session, job, JobState.FAILED, reason=why, now=now, finished_at=now
                        )
                    elif isinstance(error, DriverError):
                        # What it waits for meanwhile (a fixed port held by another process).
                        job.reason = f"not started yet, retrying: {error.message}"

    def _start_one(self, session: Session, job: JobRow, now: dt.datetime) -> None:
        if job.cancel_requested_at is not None:
            switch_job_state(
                session,
                job,
                JobState.CANCELLED,
                reason="cancelled by request",
                now=now,
                finished_at=now,
            )
            return
        targets = self._vc_targets(session, job)
        if job.vc_id is not None and targets is None:
            return  # its cluster is being suspended or deleted: that loop decides
        if not self._is_home(job, targets):
            return  # task 0's machine starts it
        self._create_tasks(session, job, targets)
        switch_job_state(
            session,
            job,
            JobState.STARTING,
            reason="starting its tasks",
            now=now,
            master_port=self._rendezvous_port(session, job),
        )

    @staticmethod
    def _vc_targets(session: Session, job: JobRow) -> dict[str, VnodeTarget] | None:
        """The nodes of the job's running cluster by hostname; ``None`` if it has none now."""
        if job.vc_id is None:
            return None
        vc = session.get(VirtualClusterRow, job.vc_id)
        if vc is None or vc.state != VcState.RUNNING.value:
            return None
        return vnode_targets(vc)

    def _create_tasks(
        self, session: Session, job: JobRow, targets: Mapping[str, VnodeTarget] | None = None
    ) -> None:
        existing = set(
            session.scalars(
                select(TaskRow.index).where(
                    TaskRow.job_id == job.id, TaskRow.attempt == job.attempt
                )
            )
        )
        for placement in placement_from_json(job.placement):
            if placement.index not in existing:
                host = self._host_of(placement.node, targets)
                session.add(
                    TaskRow(
                        job_id=job.id,
                        attempt=job.attempt,
                        index=placement.index,
                        node=placement.node,
                        host=host,
                        # Another machine's task is launched by that machine's own driver.
                        driver=self._driver_name_for(host) if self._mine(host) else "local",
                    )
                )

    @staticmethod
    def _host_of(node: str, targets: Mapping[str, VnodeTarget] | None) -> str:
        target = (targets or {}).get(node)
        return node if target is None else target.host_node

    def _is_home(self, job: JobRow, targets: Mapping[str, VnodeTarget] | None) -> bool:
        placements = placement_from_json(job.placement)
        return bool(placements) and self._mine(self._host_of(placements[0].node, targets))

    def _rendezvous_port(self, session: Session, job: JobRow) -> int:
        if job.vc_id is not None:
            return vc_master_port(job.id)
        first = placement_from_json(job.placement)[0]
        driver = self._driver_name_for(first.node)
        if job.kind == SERVICE and job.host_port is not None:
            # A fixed port: the scheduler put no other holder of it on this node, but a
            # process of the machine may hold it.  Then the replica waits admitted here
            # (retried with backoff, then failed and replaced): it would not bind it.
            if driver == "local" and port_listened(job.host_port):
                raise DriverError(
                    f"port {job.host_port} is taken on node {first.node} by a process "
                    "that is not a virtuai workload"
                )
            return job.host_port
        if job.kind == SERVICE and self._ports is not None and driver == "local":
            return self._ports.pick(session)  # from the range reserved for replicas
        return self._drivers[driver].rendezvous(first.node)[1]

    def _driver_name_for(self, node: str) -> str:
        # One driver per site; on a single machine that is the local driver.
        for name, driver in self._drivers.items():
            if node in driver.node_names():
                return name
        raise DriverError(f"no driver offers node {node!r}")

    # -- starting: launch every task, then running -----------------------------------------

    def launch_tasks(self) -> None:
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(TaskRow, JobRow, TenantRow.name)
                .join(JobRow, JobRow.id == TaskRow.job_id)
                .join(TenantRow, TenantRow.id == JobRow.tenant_id)
                .where(JobRow.state == JobState.STARTING.value)
                .where(TaskRow.attempt == JobRow.attempt)
                .where(TaskRow.handle.is_(None), TaskRow.outcome.is_(None))
                .where(self._my_tasks())
                .order_by(TaskRow.job_id, TaskRow.index)
            ).all()
            if rows:
                self._addresses = dict(session.execute(select(NodeRow.name, NodeRow.address)).all())
            work: list[_Launch] = []
            for task, job, tenant in rows:
                if task.id in self._inflight or not self._backoff.ready(("launch", task.id)):
                    continue
                try:
                    work.append(self._launch_of(session, job, tenant, task))
                except Exception as error:  # a corrupt record: this task only
                    if lost_transaction(error):
                        raise
                    self._launch_failed(task.id, f"{job.id}.{job.attempt}.{task.index}", error)
            cancelled = {job.id for _, job, _ in rows if job.cancel_requested_at is not None}
            session.rollback()
        self._waiting_launches = True  # until the wait below is over (see _launch_done)
        try:
            for item in work:
                task_id, spec = item.task_id, item.spec
                if int(spec.job_id) in cancelled:
                    self._record_result(task_id, self._never_started("cancelled before it started"))
                    continue
                try:
                    if item.problem is not None:
                        raise DriverError(item.problem)
                    if item.vnode is not None:
                        spec = self._in_vnode(spec, item.vnode)
                    if item.image is not None:
                        spec = self._over_image(spec, item.image)
                    driver = self._drivers[self._driver_name_for(spec.node)]
                    if item.guarded_port and self._ports and driver is self._drivers.get("local"):
                        # Before the replica exists: no moment where any process may reach it.
                        self._ports.guard_port(item.guarded_port)
                except VirtuaiError as error:
                    log.warning("launching task %s failed: %s", spec.key, error.message)
                    failed = self._never_started(error.message, launch_failed=True)
                    self._record_result(task_id, failed)
                    continue
                future = self._deadline.submit(driver.launch, spec)
                future.add_done_callback(self._launch_done)
                self._inflight[task_id] = (future, time.monotonic(), spec.key)
            if work and self._inflight:
                concurrent.futures.wait(
                    [f for f, _, _ in self._inflight.values()], timeout=self._config.launch_wait_s
                )
        finally:
            self._waiting_launches = False
        self._mark_running(self._collect_launches())

    def _launch_done(self, _future: object) -> None:
        """A launch returned: wake the next round to record it, unless this pass is still
        waiting for its launches and records it itself (a woken round for nothing costs
        the reads of every step, and the next submit its duty pause)."""
        if not self._waiting_launches:
            self._wake()

    def _collect_launches(self) -> dict[int, Handle]:
        """The handles of finished launches, by task id; fail or retry the others' errors."""
        handles: dict[int, Handle] = {}
        for task_id, (future, started, key) in list(self._inflight.items()):
            if not future.done():
                if time.monotonic() - started < self._config.launch_timeout_s:
                    continue
                del self._inflight[task_id]
                timeout = self._config.launch_timeout_s
                self._launch_failed(
                    task_id, key, DriverTimeout(f"launch did not return within {timeout:g}s")
                )
                continue
            del self._inflight[task_id]
            try:
                handle = future.result()
            except Exception as error:
                self._launch_failed(task_id, key, error)
                continue
            self._backoff.succeeded(("launch", task_id))
            handles[task_id] = handle
        return handles

    def _launch_failed(self, task_id: int, key: str, error: Exception) -> None:
        """A driver's refusal fails the task at once (as before); a timeout or an unexpected
        error is retried with backoff (launching is idempotent by key), then fails it.
        A temporary refusal (a site that cannot be reached) is simply tried again later."""
        if isinstance(error, TemporaryDriverError):
            log.warning("launching task %s deferred: %s", key, error.message)
            return
        if isinstance(error, VirtuaiError) and not isinstance(error, DriverBusy):
            log.warning("launching task %s failed: %s", key, error.message)
            self._record_result(task_id, self._never_started(error.message, launch_failed=True))
            return
        reason = self._backoff.failed(("launch", task_id), error, f"launching task {key}")
        if reason is not None:
            self._record_result(task_id, self._never_started(reason, launch_failed=True))

    def _launch_of(self, session: Session, job: JobRow, tenant: str, task: TaskRow) -> _Launch:
        if job.vc_id is None:
            guarded = job.master_port if job.kind == SERVICE else None
            spec = self._spec(job, tenant, task)
            return _Launch(task.id, spec, image=job.image, guarded_port=guarded)
        placements = placement_from_json(job.placement)
        targets = self._vc_targets(session, job) or {}
        vnode = targets.get(placements[task.index].node)
        master = targets.get(placements[0].node)
        if vnode is None or master is None or self._vnodes is None:
            spec = self._spec(job, tenant, task, master_addr="", host_node=task.node)
            return _Launch(task.id, spec, problem="its virtual cluster is not running")
        spec = self._spec(job, tenant, task, master_addr=master.address, host_node=vnode.host_node)
        return _Launch(task.id, spec, vnode)

    def _over_image(self, spec: TaskSpec, name: str) -> TaskSpec:
        """The task in a sandbox over image ``name``'s root, as found on this machine."""
        if self._vnodes is None:
            raise DriverError(f"image {name}: this server has no virtual-cluster runtime")
        image = self._vnodes.job_image(name)
        venv = spec.env.get("VIRTUAL_ENV")  # an environment built for the image: seen inside
        if venv:
            image = dataclasses.replace(image, binds=(venv,))
        return dataclasses.replace(spec, image=image)

    def _in_vnode(self, spec: TaskSpec, vnode: VnodeTarget) -> TaskSpec:
        """The task as launched inside its virtual node: the node's reference and environment."""
        assert self._vnodes is not None
        ref = self._vnodes.vnode(vnode.runtime_id, vnode.index)
        return dataclasses.replace(spec, env={**ref.env, **spec.env}, vnode=ref.node)

    def _spec(
        self,
        job: JobRow,
        tenant: str,
        task: TaskRow,
        *,
        master_addr: str | None = None,
        host_node: str | None = None,
    ) -> TaskSpec:
        """``master_addr`` and ``host_node`` are given for a job in a virtual cluster."""
        placements = placement_from_json(job.placement)
        placement = placements[task.index]
        if master_addr is None:
            master_addr = self._address_of(placements[0].node)
        default_workdir = (
            str(self._config.workspaces_dir / tenant) if job.vc_id is None else VC_WORKDIR
        )
        env = task_environment(
            job_id=job.id,
            job_name=job.name,
            tenant=tenant,
            restart_count=job.restart_count,
            placements=placements,
            index=task.index,
            master_addr=master_addr,
            master_port=job.master_port or 0,
            user_env=job.env,
            array_id=job.array_id,
            array_index=job.array_index,
        )
        if self._config.job_token_key:
            env["VIRTUAI_JOB_TOKEN"] = job_token(self._config.job_token_key, job.id, job.attempt)
            env["VIRTUAI_API_URL"] = self._config.api_url
        if job.kind == KIND:
            self._notebook_env(env, job, placement.node)
        elif job.kind == SERVICE and job.vc_id is None:
            # Where the proxy and the probes reach it (``notebook_upstream``): its node's
            # registered address; the port guard keeps everyone but the server out.
            env[HOST_ENV] = self._addresses.get(placement.node) or "127.0.0.1"
        return TaskSpec(
            job_id=str(job.id),
            attempt=job.attempt,
            index=task.index,
            tenant=tenant,
            command=tuple(job.command),
            env=env,
            workdir=job.workdir or default_workdir,
            create_workdir=job.workdir is None and job.vc_id is None,
            node=host_node or placement.node,
            resources=placement.resources,
            gpu_indices=placement.gpu_indices,
            walltime_s=job.walltime_s,
            kill_grace_s=self._config.kill_grace_s,
            checkpoint_signal=job.checkpoint_signal,
            checkpoint_grace_s=job.checkpoint_grace_s,
            run_as=tenant,
        )

    def _notebook_env(self, env: dict[str, str], job: JobRow, node: str) -> None:
        """A notebook listens on its node's registered address (where the proxy of any
        machine reaches it, ``proxy.routes``) and accepts only the proxy's secret."""
        if not self._config.job_token_key:
            raise DriverError("this server has no key for notebook secrets")
        env[SECRET_ENV] = notebook_secret(self._config.job_token_key, job.id, job.attempt)
        env[IP_ENV] = self._addresses.get(node) or "127.0.0.1"

    def _address_of(self, node: str) -> str:
        """Where tasks reach ``node``: its driver's answer here, the registered address else."""
        for driver in self._drivers.values():
            if node in driver.node_names():
                return driver.rendezvous(node)[0]
        address = self._addresses.get(node)
        if not address:
            raise DriverError(f"node {node} has no registered address for MASTER_ADDR")
        return address

    def _mark_running(self, handles: Mapping[int, Handle]) -> None:
        """Record the new ``handles``, and start the jobs whose every task has one: one
        transaction (one commit) for all the launches of a pass."""
        if not handles and not self._any_job_in(JobState.STARTING):
            return  # nothing launched and nothing starting: no write lock to take
        with loop_transaction(self._sessions) as session:
            for task_id, handle in handles.items():
                session.execute(
                    update(TaskRow)
                    .where(TaskRow.id == task_id, TaskRow.handle.is_(None))
                    .values(handle=handle)
                )
            jobs = list(
                session.scalars(select(JobRow).where(JobRow.state == JobState.STARTING.value))
            )
            of_job = self._tasks_of_jobs(session, [job.id for job in jobs])
            now = self._clock.now()
            for job in jobs:
                tasks = of_job.get(job.id, [])
                if tasks and not self._mine(tasks[0].host):
                    continue  # the job's home machine records it
                if tasks and all(t.handle is not None or t.outcome is not None for t in tasks):
                    nodes = sorted({t.node for t in tasks})
                    switch_job_state(
                        session,
                        job,
                        JobState.RUNNING,
                        reason=f"running on {', '.join(nodes)}",
                        now=now,
                        started_at=now,
                    )

    # -- running -> finished ---------------------------------------------------------------

    def observe_and_finish(self) -> None:
        """Observe the running tasks, then record their ends and the jobs they end in one
        commit (see ``finish_jobs``)."""
        ended = self._observe_ends()
        self.finish_jobs(ended)
        self._after_ends(ended)

    def finish_jobs(self, new_ends: list[tuple[int, int, TaskResult]] | None = None) -> None:
        """Record ``new_ends`` (``(task id, job id, result)`` just observed), the end of every
        job whose tasks have all ended, and the releases of the last pass, in one commit
        (SQLite commits are ``fsync``s: this was three of them per pass); then release
        the ended tasks.

        What can end is found in a read, without the write lock: most passes end nothing,
        and a pass must not queue behind the API's writes to learn that.  The jobs that
        can end are ended as compare-and-sets from the state they are read in again.  A
        crash anywhere loses nothing: the ends are on the drivers' side and are observed
        again; a release whose mark was not committed is done again (harmless).
        """
        new_ends = new_ends or []
        just_ended = {task_id for task_id, _, _ in new_ends}
        with read_session(self._sessions) as session:
            jobs = list(session.scalars(select(JobRow).where(JobRow.state.in_(ACTIVE_STATES))))
            tasks = self._tasks_of_jobs(session, [job.id for job in jobs])
            done = [
                job.id
                for job in jobs
                if self._all_ended(job, tasks.get(job.id, []), just_ended)
                and self._backoff.ready(("finish", job.id))
            ]
            # Every task whose end is recorded, also those a crash kept from being released,
            # and those whose end is recorded below.
            to_release = [
                (task_id, driver, handle)
                for task_id, driver, handle in session.execute(
                    select(TaskRow.id, TaskRow.driver, TaskRow.handle).where(
                        TaskRow.outcome.is_not(None),
                        TaskRow.released.is_(False),
                        TaskRow.handle.is_not(None),
                        self._my_tasks(),
                    )
                )
                if task_id not in self._unmarked
            ]
            to_release += [
                (t.id, t.driver, t.handle)
                for job_tasks in tasks.values()
                for t in job_tasks
                if t.id in just_ended and t.handle is not None
            ]
            session.rollback()
        unmarked = sorted(self._unmarked)
        if done or new_ends or unmarked:
            with loop_transaction(self._sessions) as session:
                self._write_results(session, new_ends)
                self._finish(session, done)
                self._mark_released(session, unmarked)
            self._unmarked.difference_update(unmarked)
        # Marked with the next pass's commit (until then, this process does not release them
        # again; after a crash, the next one does, which is harmless).
        self._unmarked.update(self._release_calls(to_release))

    def _finish(self, session: Session, job_ids: list[int]) -> None:
        if not job_ids:
            return
        jobs = list(
            session.scalars(
                select(JobRow)
                .where(JobRow.id.in_(job_ids), JobRow.state.in_(ACTIVE_STATES))
                .order_by(JobRow.id)
            )
        )
        tasks = self._tasks_of_jobs(session, [job.id for job in jobs])
        now = self._clock.now()
        for job in jobs:
            try:
                with session.begin_nested():  # one job's failure undoes only its own work
                    self._finish_one(session, job, tasks.get(job.id, []), now)
            except Exception as error:
                if lost_transaction(error):
                    raise
                why = self._backoff.failed(("finish", job.id), error, f"ending job {job.id}")
                if why is not None:
                    switch_job_state(
                        session, job, JobState.FAILED, reason=why, now=now, finished_at=now
                    )

    @staticmethod
    def _all_ended(job: JobRow, tasks: list[TaskRow], just_ended: set[int] | None = None) -> bool:
        """Every task of the job's attempt has ended (recorded, or in ``just_ended``)."""
        just_ended = just_ended or set()
        return len(tasks) >= job.tasks and all(
            t.outcome is not None or t.id in just_ended for t in tasks
        )

    def _finish_one(
        self, session: Session, job: JobRow, tasks: list[TaskRow], now: dt.datetime
    ) -> None:
        if not self._all_ended(job, tasks):
            return
        if not self._mine(tasks[0].host):
            return  # the job's home machine records its end
        if job.state == JobState.PREEMPTING.value and self._end_preemption(
            session, job, tasks, now
        ):
            return
        if self._end_fenced(session, job, tasks, now):
            return
        state, reason, exit_code = job_outcome(
            [(TaskOutcome(t.outcome), t.exit_code) for t in tasks if t.outcome],
            cancel_requested=job.cancel_requested_at is not None,
        )
        if job.cancel_reason and state is JobState.CANCELLED:
            reason = job.cancel_reason  # the platform's own words ("culled after 1h idle")
        given_up = [
            t for t in tasks if t.outcome == TaskOutcome.LOST.value and GAVE_UP in t.message
        ]
        if reason.startswith("lost") and given_up:
            reason = f"lost: {given_up[0].message}"  # why the platform gave up on it
        started = [t.started_at for t in tasks if t.started_at]
        if switch_job_state(
            session,
            job,
            state,
            reason=reason,
            now=now,
            exit_code=exit_code,
            finished_at=now,
            started_at=job.started_at or (min(started) if started else None),
        ):
            for task in tasks:
                record_task_usage(session, job, task, self._config.half_life_s)

    def _end_fenced(
        self, session: Session, job: JobRow, tasks: list[TaskRow], now: dt.datetime
    ) -> bool:
        """A task killed because its node lost the database (self-fencing) was not the job's
        fault: the job goes back to the queue as its next attempt (or fails without requeue)."""
        fenced = [t for t in tasks if t.message == FENCE_MESSAGE]
        if not fenced or job.cancel_requested_at is not None:
            return False
        why = f"node {fenced[0].host or fenced[0].node} lost the database"
        if job.requeue:
            return requeue_next_attempt(session, job, reason=f"requeued: {why}", now=now)
        return switch_job_state(session, job, JobState.FAILED, reason=why, now=now, finished_at=now)

    def _end_preemption(
        self, session: Session, job: JobRow, tasks: list[TaskRow], now: dt.datetime
    ) -> bool:
        """A preempted job whose tasks have all stopped goes back to the queue (same id, next
        attempt) or, with ``--no-requeue``, ends as ``preempted``.  Returns False when the
        job ended by itself first (or was cancelled): its ordinary outcome then applies."""
        finished_anyway = job.requeue_requested_at is None and all(
            t.outcome == TaskOutcome.EXITED.value and t.exit_code == 0 for t in tasks
        )
        if finished_anyway or job.cancel_requested_at is not None:
            return False
        for task in tasks:
            record_task_usage(session, job, task, self._config.half_life_s)
        preempted_by = job.reason
        if job.requeue:
            requeue_next_attempt(
                session, job, reason=f"requeued: {preempted_by}", now=now, requeue_requested_at=None
            )
        else:
            codes = [t.exit_code for t in tasks if t.exit_code]
            switch_job_state(
                session,
                job,
                JobState.PREEMPTED,
                reason=f"{preempted_by} (not requeued)",
                now=now,
                finished_at=now,
                exit_code=codes[0] if codes else None,
            )
        return True

    def _any_job_in(self, state: JobState) -> bool:
        with read_session(self._sessions) as session:
            found = session.scalar(select(JobRow.id).where(JobRow.state == state.value).limit(1))
            session.rollback()
        return found is not None

    @staticmethod
    def _tasks_of_jobs(session: Session, job_ids: list[int]) -> dict[int, list[TaskRow]]:
        """The tasks of the jobs' current attempts, in index order, by job id: one query for
        a pass rather than one per job."""
        if not job_ids:
            return {}
        rows = session.scalars(
            select(TaskRow)
            .join(JobRow, JobRow.id == TaskRow.job_id)
            .where(TaskRow.job_id.in_(job_ids), TaskRow.attempt == JobRow.attempt)
            .order_by(TaskRow.job_id, TaskRow.index)
        )
        tasks: dict[int, list[TaskRow]] = {}
        for task in rows:
            tasks.setdefault(task.job_id, []).append(task)
        return tasks
