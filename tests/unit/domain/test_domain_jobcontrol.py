"""Slurm-style job control syntax: arrays, dependencies, checkpoint signals."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtuai.domain.arrays import MAX_ARRAY_SIZE, parse_array
from virtuai.domain.dependencies import (
    Dependency,
    DependencyKind,
    evaluate,
    format_dependencies,
    parse_dependencies,
)
from virtuai.domain.units import parse_signal_spec
from virtuai.domain.workload import JobState
from virtuai.errors import InvalidRequest

S, F, R = JobState.SUCCEEDED, JobState.FAILED, JobState.RUNNING


@pytest.mark.parametrize(
    ("text", "indices", "throttle"),
    [
        ("0-3", (0, 1, 2, 3), None),
        ("1,3,5-7", (1, 3, 5, 6, 7), None),
        ("0-15:4", (0, 4, 8, 12), None),
        ("0-99%10", tuple(range(100)), 10),
        ("7", (7,), None),
        ("2,2,1", (1, 2), None),
    ],
)
def test_arrays(text: str, indices: tuple[int, ...], throttle: int | None) -> None:
    spec = parse_array(text)
    assert (spec.indices, spec.max_running) == (indices, throttle)


@pytest.mark.parametrize("text", ["", "a-b", "5-1", "1-2%0", "0-10:0", f"0-{MAX_ARRAY_SIZE}"])
def test_bad_arrays_name_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_array(text)
    assert info.value.field == "array"


def test_dependencies_parse_and_print_back() -> None:
    deps = parse_dependencies("afterok:1:2,afterany:3")
    assert deps == (
        Dependency(DependencyKind.AFTER_OK, 1),
        Dependency(DependencyKind.AFTER_OK, 2),
        Dependency(DependencyKind.AFTER_ANY, 3),
    )
    assert format_dependencies(deps) == "afterok:1:2,afterany:3"
    with pytest.raises(InvalidRequest):
        parse_dependencies("afterok")


@given(st.lists(st.sampled_from([S, F, R, JobState.PENDING, JobState.CANCELLED]), min_size=1))
def test_afterany_is_ready_exactly_when_all_ended(states: list[JobState]) -> None:
    status = evaluate([Dependency(DependencyKind.AFTER_ANY, 1)], {1: states})
    assert status.ready == all(s.is_finished() for s in states)
    assert status.never is None


def test_afterok_and_afternotok() -> None:
    ok, not_ok = DependencyKind.AFTER_OK, DependencyKind.AFTER_NOT_OK
    assert evaluate([Dependency(ok, 1)], {1: [S, S]}).ready
    assert evaluate([Dependency(ok, 1)], {1: [S, F]}).never == "job 1 did not succeed (afterok)"
    assert evaluate([Dependency(not_ok, 1)], {1: [F]}).ready
    assert evaluate([Dependency(not_ok, 1)], {1: [S]}).never == "job 1 succeeded (afternotok)"
    waiting = evaluate([Dependency(ok, 1), Dependency(ok, 2)], {1: [S], 2: [R]})
    assert (waiting.ready, waiting.waiting_for) == (False, "job 2 (afterok)")
    assert evaluate([Dependency(ok, 9)], {}).never == "job 9 does not exist"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("USR1@60", (signal.SIGUSR1, 60)),
        ("SIGUSR2@5", (signal.SIGUSR2, 5)),
        ("B:TERM@0", (signal.SIGTERM, 0)),
        ("10@30", (10, 30)),
        ("INT", (signal.SIGINT, 60)),
    ],
)
def test_signal_specs(text: str, expected: tuple[int, int]) -> None:
    assert parse_signal_spec(text) == expected


@pytest.mark.parametrize("text", ["KILL@5", "NOPE@5", "USR1@soon", "USR1@99999"])
def test_bad_signal_specs(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_signal_spec(text)
    assert info.value.field == "signal"
