"""One object kept from a scheduling pass to the next.

What a pass builds over the running jobs or the nodes (``placement.Cluster``,
``ends.Ends``, ``victimindex.VictimIndex``) is, on a big cluster, the largest cost of
a pass if it is built again each time; kept, the next pass brings it up to date with
what changed.  One pass at a time holds it (``take`` ... ``keep``); a pass on another
thread meanwhile builds its own and keeps nothing, and a pass that fails before
``keep`` leaves the keeper held, so later passes build their own too.  What the kept
object is built over is compared with the last pass's by object identity (``since``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

__all__ = ["Keeper", "Kept", "Since", "since"]

T = TypeVar("T")


class Keeper(Generic[T]):
    """Holds the last pass's object for the next one."""

    def __init__(self) -> None:
        self._kept: T | None = None
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, T | None]:
        """Whether this pass now holds the keeper, and the kept object (``None``: none
        kept yet).  A pass that holds it hands an object back with ``keep``."""
        if not self._lock.acquire(blocking=False):
            return False, None
        kept, self._kept = self._kept, None
        return True, kept

    def keep(self, kept: T | None) -> None:
        """Keep ``kept`` (``None``: nothing) for the next pass, and let it take it."""
        try:
            self._kept = kept
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Keep nothing: the next pass builds its own from scratch."""
        self._kept = None


class Kept:
    """What a ``Keeper`` hands from pass to pass (each subclass has its own ``_keeper``):
    a pass that took the keeper with this object sets ``_shared``, and ``done()`` hands
    the object back."""

    _keeper: ClassVar[Keeper[Any]]
    _shared: bool = False  # this pass holds the keeper and hands this object back

    def done(self) -> None:
        """The pass is over: keep this object for the next one."""
        if not self._shared:
            return
        self._shared = False
        type(self)._keeper.keep(self)


class Since(NamedTuple, Generic[T]):
    """What a pass's objects are against the last pass's, by object identity."""

    now: dict[int, T]  # id() -> object, of this pass
    added: set[int]  # ids new since the last pass
    gone: set[int]  # ids of the last pass that are not here (empty when ``mostly_new``)
    mostly_new: bool  # one rebuild is then cheaper than as many updates


def since(objects: Sequence[T], last: dict[int, T]) -> Since[T]:
    """``objects`` against ``last`` (the previous ``Since.now``), found at C speed: a kept
    structure updates what changed, or rebuilds when most objects are new (the first
    pass, or a caller that builds new objects every pass).  The caller holds ``last``'s
    objects until this call, so that an ``id`` cannot have been reused in between."""
    now = dict(zip(map(id, objects), objects, strict=True))
    added = now.keys() - last.keys()
    if 4 * len(added) > len(now) + 16:
        return Since(now, added, set(), True)
    return Since(now, added, last.keys() - now.keys(), False)
