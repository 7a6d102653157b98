"""The garbage collector of a long-running server: the start-up heap frozen.

CPython's full (generation 2) collection walks every tracked object with every thread
stopped.  Once the platform is built the server holds some 185,000 of them (modules,
SQLAlchemy's and pydantic's machinery) that live as long as the process, and each full
collection under the scale load (#7 §2) walked them all again: 50-150 ms pauses of the
whole API on this machine, each one in the p99 of every request in flight.
``gc.freeze()`` moves what exists at that moment into a permanent generation that no
collection walks; garbage made later is collected as before, and a full collection then
walks only what was made since.  Freezing keeps alive only what is alive then, which is
(nearly) all permanent: so it runs once, at start-up, never again (a repeated freeze would
keep the cycles that died since).  The thresholds stay CPython's: larger young generations
made each young collection a longer pause (20-30 ms for 10,000) for little CPU saved.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then freeze the survivors (see the module's docstring)."""
    gc.collect()
    gc.freeze()
