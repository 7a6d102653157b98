"""Workloads: what a user asks to run, and the state machine a job moves through.

Job life cycle (every arrow is an event with a reason)::

    pending -> admitted -> starting -> running -> succeeded | failed | cancelled | timed_out
       |           |           |           \\-> preempting -> pending    (requeued, same id)
       |           |           |                          \\-> preempted  (--no-requeue)
       \\-----------+-----------+--> cancelled | failed

``pending`` jobs carry the reason they wait; terminal states carry why they ended.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from virtuai.domain.resources import Resources
from virtuai.errors import Conflict


class WorkloadKind(enum.StrEnum):
    JOB = "job"
    NOTEBOOK = "notebook"
    SERVICE = "service"


class JobState(enum.StrEnum):
    PENDING = "pending"
    ADMITTED = "admitted"
    STARTING = "starting"
    RUNNING = "running"
    PREEMPTING = "preempting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    PREEMPTED = "preempted"

    def is_finished(self) -> bool:
        return self in FINISHED_STATES

    def holds_resources(self) -> bool:
        """Admitted work counts against capacity and quota until it has ended."""
        return self in (
            JobState.ADMITTED,
            JobState.STARTING,
            JobState.RUNNING,
            JobState.PREEMPTING,
        )


FINISHED_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMED_OUT,
        JobState.PREEMPTED,
    }
)

JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.ADMITTED, JobState.CANCELLED, JobState.FAILED}),
    JobState.ADMITTED: frozenset(
        {JobState.STARTING, JobState.PENDING, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.STARTING: frozenset(
        {
            JobState.RUNNING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.PREEMPTING,
            JobState.PENDING,  # its node was lost: requeued as the next attempt
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.PREEMPTING,
            JobState.PENDING,  # its node was lost: requeued as the next attempt
        }
    ),
    JobState.PREEMPTING: frozenset(
        {
            JobState.PENDING,
            JobState.PREEMPTED,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.PREEMPTED: frozenset(),
}


def check_transition(current: JobState, new: JobState) -> None:
    """Raise ``Conflict`` unless ``current -> new`` is in the transition table."""
    if new not in JOB_TRANSITIONS[current]:
        raise Conflict(f"a job cannot go from {current} to {new}", field="state")


@dataclass(frozen=True, slots=True)
class PriorityClass:
    name: str
    value: int
    preemptible: bool = True


DEFAULT_PRIORITY_CLASSES: tuple[PriorityClass, ...] = (
    PriorityClass("low", 100),
    PriorityClass("normal", 500),
    PriorityClass("high", 1000, preemptible=False),
)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the user asked for. Validated at the API edge; immutable afterwards."""

    name: str
    command: tuple[str, ...]
    per_task: Resources
    tasks: int = 1
    walltime_s: int = 3600
    priority: str = "normal"
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    kind: WorkloadKind = WorkloadKind.JOB

    @property
    def total(self) -> Resources:
        return self.per_task.times(self.tasks)


@dataclass(frozen=True, slots=True)
class TaskPlacement:
    """Where one task of a gang runs: a node and the concrete devices it owns there.

    ``host_ports``: the fixed TCP ports the task holds on its node (a service's
    ``port: N``, as Nomad's static ports and Kubernetes' ``hostPort``): at most one
    task of a node holds a port at a time."""

    index: int
    node: str
    resources: Resources
    gpu_indices: tuple[int, ...] = ()
    host_ports: tuple[int, ...] = ()


class TaskOutcome(enum.StrEnum):
    """How one task ended, as observed by its driver."""

    EXITED = "exited"  # the process exited by itself (any exit code)
    KILLED_WALLTIME = "walltime"  # stopped at its time limit
    KILLED_CANCEL = "cancelled"  # stopped at the user's request (or because a sibling failed)
    KILLED_PREEMPT = "preempted"  # stopped by the scheduler to make room: checkpoint signal first
    KILLED_OOM = "oom"  # killed by the kernel for exceeding its memory limit
    LOST = "lost"  # the supervisor vanished without a record
    LAUNCH_FAILED = "launch_failed"  # could not be started (bad workdir, no such command)


def job_outcome(
    outcomes: list[tuple[TaskOutcome, int | None]], *, cancel_requested: bool = False
) -> tuple[JobState, str, int | None]:
    """Fold the ending of every task of a gang into the job's final state.

    Returns ``(state, reason, exit_code)``.  The job's exit code is the first
    non-zero task exit code, as ``srun`` reports it.  Tasks that the platform
    stopped because a sibling failed (``KILLED_CANCEL`` without a user's
    cancel) do not decide the outcome: the sibling's failure does.
    """
    if cancel_requested:
        codes = [code for _, code in outcomes]
        return JobState.CANCELLED, "cancelled by request", next((c for c in codes if c), None)
    deciding = [
        (index, kind, code)
        for index, (kind, code) in enumerate(outcomes)
        if kind is not TaskOutcome.KILLED_CANCEL
    ]
    if not deciding:
        return JobState.CANCELLED, "stopped", None
    codes = [code for _, _, code in deciding if code is not None]
    # None when no task got as far as exiting (e.g. none could be launched).
    exit_code = next((code for code in codes if code), 0 if codes else None)
    for kind, state, reason in _OUTCOME_PRECEDENCE:
        for index, task_kind, _ in deciding:
            if task_kind is kind:
                return state, _task_reason(reason, index, len(outcomes), exit_code), exit_code
    failed = [(index, code) for index, _, code in deciding if code]
    if failed:
        index, code = failed[0]
        return JobState.FAILED, _task_reason("exited with code", index, len(outcomes), code), code
    return JobState.SUCCEEDED, "exited with code 0", 0


_OUTCOME_PRECEDENCE = (
    (TaskOutcome.KILLED_WALLTIME, JobState.TIMED_OUT, "reached its time limit"),
    (TaskOutcome.KILLED_OOM, JobState.FAILED, "out of memory"),
    (TaskOutcome.LAUNCH_FAILED, JobState.FAILED, "could not start"),
    (TaskOutcome.LOST, JobState.FAILED, "lost: its supervisor vanished"),
)


def _task_reason(what: str, index: int, n_tasks: int, code: int | None) -> str:
    if what == "exited with code":
        what = f"exited with code {code}"
    return f"task {index} {what}" if n_tasks > 1 else what
