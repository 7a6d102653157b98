"""The working-state Cluster and its FitList index, checked against plain lists."""

from __future__ import annotations

from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import job, node, res, state

from virtuai.scheduler import fitlist
from virtuai.scheduler.fitlist import Entry, FitList
from virtuai.scheduler.placement import Cluster

entries = st.builds(
    lambda cpu, mem, name: (cpu, mem, f"n{name}", name),
    st.integers(-2, 12),
    st.integers(-2, 12),
    st.integers(0, 200),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), entries), max_size=120),
    queries=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=10),
)
def test_fitlist_matches_a_sorted_list(
    ops: list[tuple[bool, Entry]], queries: list[tuple[int, int]]
) -> None:
    with patch.object(fitlist, "CHUNK", 2):  # small chunks: many splits and merges
        fl, plain = FitList(), set[Entry]()
        for add, entry in ops:
            # Node numbers are unique in a Cluster: one entry per number at a time.
            present = next((e for e in plain if e[3] == entry[3]), None)
            if add and present is None:
                fl.add(entry)
                plain.add(entry)
            elif not add and present is not None:
                fl.remove(present)
                plain.discard(present)
            assert fl.entries() == sorted(plain)
            assert len(fl) == len(plain)
        for cpu, mem in queries:
            expected = next((e for e in sorted(plain) if e[0] >= cpu and e[1] >= mem), None)
            assert fl.first_fit(cpu, mem) == expected


def test_fitlist_remove_of_a_missing_entry_raises() -> None:
    fl = FitList()
    fl.add((1, 1, "a", 0))
    try:
        fl.remove((1, 2, "a", 0))
    except KeyError:
        pass
    else:  # pragma: no cover
        raise AssertionError("expected KeyError")


def free_of(cluster: Cluster) -> dict[str, tuple[int, int, int, list[int]]]:
    return {n.name: (n.cpu, n.memory, n.gpu, list(n.free_gpus)) for n in cluster.nodes()}


def test_a_gang_that_does_not_fit_leaves_the_cluster_unchanged() -> None:
    cluster = Cluster([state(node("a", gpus=4), busy=[1]), state(node("b", gpus=2))])
    before = free_of(cluster), cluster.free_total()
    assert cluster.try_place(job("g", gpu=2, tasks=3)) is None  # 5 free gpus, but 2+1 in pairs
    assert (free_of(cluster), cluster.free_total()) == before


def test_release_gives_back_exactly_what_was_placed() -> None:
    cluster = Cluster([state(node("a", gpus=4), busy=[1]), state(node("b", gpus=2))])
    before = free_of(cluster), cluster.free_total()
    placed = cluster.try_place(job("g", cpu=2, gpu=1, tasks=4))
    assert placed is not None
    assert cluster.free_total() == before[1] - res(8, "4Gi", 4)
    cluster.release(placed)
    assert (free_of(cluster), cluster.free_total()) == before


def test_free_total_per_pool() -> None:
    cluster = Cluster(
        [
            state(node("a", pool="cpu")),
            state(node("b", pool="gpu", gpus=2)),
            state(node("c")),
        ]
    )
    assert cluster.free_total("gpu") == res(8, "32Gi", 2)
    assert cluster.free_total() == res(24, "96Gi", 2)
    assert cluster.free_total("nope") == res()
    assert [n.name for n in cluster.nodes("cpu")] == ["a"]
