"""Dependencies as Slurm has them: after(+MIN), afterok/any/notok, singleton, ',' and '?'."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtuai.domain.dependencies import (
    DependedJob,
    Dependency,
    DependencyKind,
    evaluate,
    format_dependencies,
    parse_dependencies,
)
from virtuai.domain.workload import JobState
from virtuai.errors import InvalidRequest

T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)
K = DependencyKind


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def test_every_kind_and_both_separators_parse() -> None:
    assert parse_dependencies("after:7+5:8,singleton,afterok:1:2") == (
        Dependency(K.AFTER, 7, 5),
        Dependency(K.AFTER, 8),
        Dependency(K.SINGLETON, 0),
        Dependency(K.AFTER_OK, 1),
        Dependency(K.AFTER_OK, 2),
    )
    assert parse_dependencies("afterok:1?afternotok:2") == (
        Dependency(K.AFTER_OK, 1, any_of=True),
        Dependency(K.AFTER_NOT_OK, 2, any_of=True),
    )
    assert format_dependencies(parse_dependencies("afterok:1:2,after:3+4,singleton")) == (
        "afterok:1:2,after:3+4,singleton"
    )
    assert format_dependencies(parse_dependencies("afterok:1?afterok:2")) == "afterok:1?afterok:2"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("afterok:1,afterany:2?afterok:3", "either ','"),
        ("singleton:3", "cannot read 'singleton:3'"),
        ("after:1+", "cannot read"),
        ("aftercor:1", "cannot read 'aftercor:1'"),
        ("aftercorr:1_2", "aftercorr names a whole array"),
        ("aftercorr:1+5", "aftercorr names a whole array"),
        ("afterok:1_", "cannot read"),
        ("after:1+9999999", "cannot read"),
        ("after:1+600000", "+MIN delays go up to"),
    ],
)
def test_bad_lists_name_the_field(text: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_dependencies(text)
    assert caught.value.field == "dependency"
    assert words in caught.value.message


def test_after_waits_for_the_start_then_the_delay() -> None:
    deps = parse_dependencies("after:1+5")
    pending = {1: [DependedJob(JobState.PENDING)]}
    assert evaluate(deps, pending, now=T0).waiting_for == "job 1 (after) to start"
    running = {1: [DependedJob(JobState.RUNNING, started_at=T0)]}
    assert evaluate(deps, running, now=minutes(4.9)).waiting_for == "job 1 (after) +5 min"
    assert evaluate(deps, running, now=minutes(5)).ready
    # Cancelled before it started: the clock starts at the cancellation.
    cancelled = {1: [DependedJob(JobState.CANCELLED, finished_at=minutes(1))]}
    assert not evaluate(deps, cancelled, now=minutes(5.5)).ready
    assert evaluate(deps, cancelled, now=minutes(6)).ready
    # A failed job had started: `after` is met whatever its end.
    failed = {1: [DependedJob(JobState.FAILED, started_at=T0, finished_at=minutes(1))]}
    assert evaluate(parse_dependencies("after:1"), failed, now=T0).ready


def test_after_on_an_array_waits_for_every_element() -> None:
    deps = parse_dependencies("after:1")
    jobs = {1: [DependedJob(JobState.RUNNING, started_at=T0), DependedJob(JobState.PENDING)]}
    assert not evaluate(deps, jobs, now=T0).ready


def test_a_delay_on_the_other_kinds_counts_from_the_end() -> None:
    deps = parse_dependencies("afterany:1+2")
    done = {1: [DependedJob(JobState.FAILED, started_at=T0, finished_at=minutes(1))]}
    assert not evaluate(deps, done, now=minutes(2)).ready
    assert evaluate(deps, done, now=minutes(3)).ready


def test_singleton_waits_for_the_blocker() -> None:
    deps = parse_dependencies("singleton")
    assert evaluate(deps, {}, singleton_blocker=None).ready
    status = evaluate(deps, {}, singleton_blocker=4)
    assert (status.ready, status.never, status.waiting_for) == (False, None, "job 4 (singleton)")


def test_any_of_is_met_by_one_and_never_only_when_all_are_never() -> None:
    deps = parse_dependencies("afterok:1?afternotok:2")
    assert evaluate(deps, {1: [JobState.SUCCEEDED], 2: [JobState.RUNNING]}).ready
    assert evaluate(deps, {1: [JobState.FAILED], 2: [JobState.FAILED]}).ready
    waiting = evaluate(deps, {1: [JobState.FAILED], 2: [JobState.RUNNING]})
    assert (waiting.ready, waiting.never) == (False, None)
    assert waiting.waiting_for == "job 2 (afternotok)"
    never = evaluate(deps, {1: [JobState.FAILED], 2: [JobState.SUCCEEDED]})
    assert never.never == "job 1 did not succeed (afterok) and job 2 succeeded (afternotok)"
    # The same terms joined by ',' fail at the first one that can never be met.
    all_of = parse_dependencies("afterok:1,afternotok:2")
    assert evaluate(all_of, {1: [JobState.FAILED], 2: [JobState.RUNNING]}).never is not None


def test_array_elements_and_aftercorr_parse_and_read_back() -> None:
    terms = parse_dependencies("afterok:12_3:14,aftercorr:20,after:12_0+5")
    assert terms == (
        Dependency(K.AFTER_OK, 12, index=3),
        Dependency(K.AFTER_OK, 14),
        Dependency(K.AFTER_CORR, 20),
        Dependency(K.AFTER, 12, 5, index=0),
    )
    assert format_dependencies(terms) == "afterok:12_3:14,aftercorr:20,after:12_0+5"
    assert [Dependency.from_json(t.to_json()) for t in terms] == list(terms)


def test_a_dependency_on_an_element_waits_for_that_element_only() -> None:
    array = {12: [DependedJob(JobState.SUCCEEDED, index=0), DependedJob(JobState.RUNNING, index=3)]}
    assert evaluate(parse_dependencies("afterok:12_0"), array).ready
    waiting = evaluate(parse_dependencies("afterok:12_3"), array)
    assert not waiting.ready and waiting.waiting_for == "job 12_3 (afterok)"
    assert evaluate(parse_dependencies("afterok:12_7"), array).never == "job 12_7 does not exist"
    assert not evaluate(parse_dependencies("afterok:12"), array).ready  # the whole array


def test_aftercorr_waits_for_the_element_of_the_same_index() -> None:
    other = {
        20: [
            DependedJob(JobState.SUCCEEDED, index=0),
            DependedJob(JobState.RUNNING, index=1),
            DependedJob(JobState.FAILED, index=2),
        ]
    }
    corr = parse_dependencies("aftercorr:20")
    assert evaluate(corr, other, own_index=0).ready
    assert evaluate(corr, other, own_index=1).waiting_for == "job 20_1 (aftercorr)"
    assert evaluate(corr, other, own_index=2).never == "job 20_2 did not succeed (aftercorr)"
    assert evaluate(corr, other, own_index=5).ready  # no such element: nothing to wait for
    # A job that is not an element waits for the whole array, as afterok.
    assert evaluate(corr, other).waiting_for == "job 20 (aftercorr)"


# -- properties -------------------------------------------------------------------------------

STATES = st.sampled_from(list(JobState))
TIMES = st.none() | st.integers(0, 30).map(minutes)
INDEXES = st.none() | st.integers(0, 2)
JOBS = st.builds(DependedJob, STATES, TIMES, TIMES, INDEXES)
TERMS = (
    st.builds(
        Dependency,
        st.sampled_from([K.AFTER, K.AFTER_OK, K.AFTER_ANY, K.AFTER_NOT_OK]),
        st.integers(1, 4),
        st.sampled_from([0, 0, 5]),
        st.just(False),
        INDEXES,
    )
    | st.builds(Dependency, st.just(K.AFTER_CORR), st.integers(1, 4))
    | st.just(Dependency(K.SINGLETON, 0))
)


@given(
    terms=st.lists(TERMS, min_size=1, max_size=5, unique=True),
    jobs=st.dictionaries(st.integers(1, 4), st.lists(JOBS, min_size=1, max_size=3)),
    now=st.integers(0, 40).map(minutes),
    blocker=st.none() | st.integers(5, 9),
    own=INDEXES,
)
def test_any_of_is_the_disjunction_and_all_of_the_conjunction(
    terms: list[Dependency],
    jobs: dict[int, list[DependedJob]],
    now: dt.datetime,
    blocker: int | None,
    own: int | None,
) -> None:
    """A list is met as a whole exactly when each (all of) / one (any of) of its terms is,
    can never be met exactly when one (all of) / each (any of) can never be, and one term
    alone means the same under both separators."""
    one = [evaluate([t], jobs, now=now, singleton_blocker=blocker, own_index=own) for t in terms]
    all_of = evaluate(terms, jobs, now=now, singleton_blocker=blocker, own_index=own)
    any_terms = [dataclasses.replace(t, any_of=True) for t in terms]
    any_of = evaluate(any_terms, jobs, now=now, singleton_blocker=blocker, own_index=own)
    assert all_of.ready == all(s.ready for s in one)
    assert (all_of.never is not None) == any(s.never is not None for s in one)
    assert any_of.ready == any(s.ready for s in one)
    assert (any_of.never is not None) == all(s.never is not None for s in one)
    for status in (all_of, any_of, *one):
        assert not (status.ready and status.never)
        assert status.ready or status.never or status.waiting_for


@given(st.lists(TERMS, min_size=1, max_size=6, unique=True), st.booleans())
def test_the_text_form_reads_back_the_same(terms: list[Dependency], any_of: bool) -> None:
    # One term is the same list under both separators: it reads back as all-of.
    terms = [dataclasses.replace(t, any_of=any_of and len(terms) > 1) for t in terms]
    text = format_dependencies(terms)
    assert set(parse_dependencies(text)) == set(terms)
