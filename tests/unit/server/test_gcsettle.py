"""The server's garbage collector after start-up (``server.gcsettle``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from virtuai.server.gcsettle import settle


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
