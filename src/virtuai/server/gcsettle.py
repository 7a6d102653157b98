"""The garbage collector of a long-running server: what lives as long as it, frozen.

CPython's full (generation 2) collection walks every tracked object with every thread
stopped.  Once the platform is built the server holds some 185,000 of them (modules,
SQLAlchemy's and pydantic's machinery) that live as long as the process, and each full
collection under the scale load (#7 §2) walked them all again: 50-150 ms pauses of the
whole API on this machine, each one in the p99 of every request in flight.
``gc.freeze()`` moves what exists at that moment into a permanent generation that no
collection walks; garbage made later is collected as before, and a full collection then
walks only what was made since.

It is done twice: at start-up, before the API opens (``settle``), and once more after the
first round of the control loops in which this server leads (``SettleOnce``): the
scheduling loop's first pass builds what then lives as long as the leadership (the
pending queue's cache of 10k jobs and their snapshot under the scale load), which the
start-up freeze cannot hold, and without which the full collections under the scale
load were still 60-90 ms.  Each freeze collects first, so it keeps only what is alive
then; frozen objects are still freed by reference counting when they are dropped (a job
admitted leaves the cache), and only a frozen object that dies in a reference cycle is
never reclaimed: a bounded, one-time cost, which is why the freeze is not repeated.  The
thresholds stay CPython's: larger young generations made each young collection a longer
pause (20-30 ms for 10,000) for little CPU saved.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def settle() -> None:
    """Collect once, then freeze the survivors (see the module's docstring)."""
    gc.collect()
    gc.freeze()


class SettleOnce:
    """A control-loop step, last of a round: ``settle`` once, at the end of the first round
    in which ``ready`` holds (this server leads, so the scheduling pass has run)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready
        self.done = False

    def __call__(self) -> None:
        if self.done or not self._ready():
            return
        self.done = True
        before = gc.get_freeze_count()
        settle()
        log.debug(
            "heap settled after the first leading round: %d objects frozen",
            gc.get_freeze_count() - before,
        )
