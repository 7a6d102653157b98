"""Workloads: what a user asks to run, and the state machine a job moves through.

Job life cycle (every arrow is an event with a reason)::

    pending -> admitted -> starting -> running -> succeeded | failed | cancelled | timed_out
       |           |           |           \\-> preempting -> pending   (requeued, same id)
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
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
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
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.PREEMPTING,
        }
    ),
    JobState.PREEMPTING: frozenset(
        {JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
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
    """Where one task of a gang runs: a node and the concrete devices it owns there."""

    index: int
    node: str
    resources: Resources
    gpu_indices: tuple[int, ...] = ()


class TaskOutcome(enum.StrEnum):
    """How one task ended, as observed by its driver."""

    EXITED = "exited"  # the process exited by itself (any exit code)
    KILLED_WALLTIME = "walltime"  # stopped at its time limit
    KILLED_CANCEL = "cancelled"  # stopped at the user's request
    KILLED_OOM = "oom"  # killed by the kernel for exceeding its memory limit
    LOST = "lost"  # the supervisor vanished without a record
    LAUNCH_FAILED = "launch_failed"  # could not be started (bad workdir, no such command)


def job_outcome(
    outcomes: list[tuple[TaskOutcome, int | None]],
) -> tuple[JobState, str, int | None]:
    """Fold the ending of every task of a gang into the job's final state.

    Returns ``(state, reason, exit_code)``.  The job's exit code is the first
    non-zero task exit code, as ``srun`` reports it.
    """
    exit_code = next((code for _, code in outcomes if code), 0 if outcomes else None)
    kinds = [kind for kind, _ in outcomes]
    if TaskOutcome.KILLED_CANCEL in kinds:
        return JobState.CANCELLED, "cancelled by request", exit_code
    if TaskOutcome.KILLED_WALLTIME in kinds:
        return JobState.TIMED_OUT, "reached its time limit", exit_code
    if TaskOutcome.KILLED_OOM in kinds:
        return JobState.FAILED, "out of memory", exit_code
    if TaskOutcome.LAUNCH_FAILED in kinds:
        return JobState.FAILED, "could not start", exit_code
    if TaskOutcome.LOST in kinds:
        return JobState.FAILED, "lost: its supervisor vanished", exit_code
    if exit_code:
        failed = [i for i, (_, code) in enumerate(outcomes) if code]
        return JobState.FAILED, f"task {failed[0]} exited with code {exit_code}", exit_code
    return JobState.SUCCEEDED, "all tasks exited with code 0", exit_code
