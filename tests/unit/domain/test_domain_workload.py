"""The job state machine and job specs."""

from __future__ import annotations

import itertools

import pytest

from virtuai.domain.resources import Resources
from virtuai.domain.workload import (
    DEFAULT_PRIORITY_CLASSES,
    FINISHED_STATES,
    JOB_TRANSITIONS,
    JobSpec,
    JobState,
    check_transition,
)
from virtuai.errors import Conflict

ALLOWED = [(a, b) for a, targets in JOB_TRANSITIONS.items() for b in targets]
FORBIDDEN = [(a, b) for a in JobState for b in JobState if b not in JOB_TRANSITIONS[a]]


def test_every_state_has_a_row_in_the_transition_table() -> None:
    assert set(JOB_TRANSITIONS) == set(JobState)


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_allowed_transitions_pass(current: JobState, new: JobState) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(("current", "new"), FORBIDDEN)
def test_forbidden_transitions_raise_conflict(current: JobState, new: JobState) -> None:
    with pytest.raises(Conflict) as info:
        check_transition(current, new)
    assert info.value.field == "state"
    assert str(current) in info.value.message and str(new) in info.value.message


def test_finished_states_are_exactly_the_dead_ends() -> None:
    assert {s for s in JobState if not JOB_TRANSITIONS[s]} == FINISHED_STATES
    assert all(s.is_finished() == (s in FINISHED_STATES) for s in JobState)


def test_documented_life_cycle() -> None:
    path = [JobState.PENDING, JobState.ADMITTED, JobState.STARTING, JobState.RUNNING]
    for current, new in itertools.pairwise(path):
        check_transition(current, new)
    check_transition(JobState.RUNNING, JobState.PREEMPTING)
    check_transition(JobState.PREEMPTING, JobState.PENDING)  # requeued, same id
    check_transition(JobState.PREEMPTING, JobState.PREEMPTED)  # --no-requeue
    for end in FINISHED_STATES - {JobState.PREEMPTED}:
        check_transition(JobState.RUNNING, end)
    # Only a preemption ends as preempted: the job is told first, then stopped.
    with pytest.raises(Conflict):
        check_transition(JobState.RUNNING, JobState.PREEMPTED)


def test_only_admitted_to_preempting_hold_resources() -> None:
    holding = {s for s in JobState if s.holds_resources()}
    assert holding == {
        JobState.ADMITTED,
        JobState.STARTING,
        JobState.RUNNING,
        JobState.PREEMPTING,
    }
    assert not holding & FINISHED_STATES


def test_states_are_plain_strings() -> None:
    assert isinstance(JobState.TIMED_OUT, str)
    assert str(JobState.TIMED_OUT) == "timed_out"
    assert JobState("pending") is JobState.PENDING


def test_job_spec_total_is_per_task_times_tasks() -> None:
    spec = JobSpec("train", ("python", "train.py"), Resources(2000, 4 * 2**30, 1), tasks=4)
    assert spec.total == Resources(8000, 16 * 2**30, 4)
    assert JobSpec("one", ("true",), Resources(500)).total == Resources(500)


def test_default_priority_classes_are_ordered_and_high_is_not_preemptible() -> None:
    values = [p.value for p in DEFAULT_PRIORITY_CLASSES]
    assert values == sorted(values)
    by_name = {p.name: p for p in DEFAULT_PRIORITY_CLASSES}
    assert not by_name["high"].preemptible
    assert by_name["low"].preemptible and by_name["normal"].preemptible
