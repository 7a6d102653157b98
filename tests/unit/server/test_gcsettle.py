"""The server's garbage collector after start-up (``server.gcsettle``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from virtuai.server.gcsettle import SettleOnce, settle


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def settled() -> Iterator[None]:
    settle()
    try:
        yield
    finally:
        gc.unfreeze()  # give the test process its heap back


def test_the_start_up_heap_is_frozen(settled: None) -> None:
    # Everything alive at start-up is out of every collection's walk.
    assert gc.get_freeze_count() > 1000


def test_cycles_made_after_start_up_are_still_collected(settled: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_settle_once_waits_for_its_first_ready_round_and_then_never_again() -> None:
    leading = [False]
    step = SettleOnce(lambda: leading[0])
    before = gc.get_freeze_count()
    try:
        step()  # a round as a follower: nothing built to keep yet
        assert not step.done and gc.get_freeze_count() == before
        leading[0] = True
        step()  # the first leading round: its heap frozen
        frozen = gc.get_freeze_count()
        assert step.done and frozen > before + 1000
        kept = [Node() for _ in range(100)]  # made later, alive: not frozen by a later round
        step()
        assert gc.get_freeze_count() == frozen and kept
    finally:
        gc.unfreeze()
