"""Runs the reconcile loops in a background thread, on a period or when woken."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from virtuai.store.db import lost_transaction

log = logging.getLogger(__name__)
MAX_PAUSE_S = 1.0


class LoopRunner:
    """Calls each step in turn every ``interval_s``, or at once when ``wake`` is set.

    A failing step is logged and retried at the next round: a loop that dies
    silently is the worst failure a control plane can have.
    """

    def __init__(
        self,
        steps: Sequence[Callable[[], object]],
        interval_s: float,
        wake: threading.Event,
        duty: float = 1.0,
        urgent: threading.Event | None = None,
    ) -> None:
        self._steps = steps
        self._interval_s = interval_s
        self._wake = wake
        # Every API write wakes the loops; under a storm of them, rounds back to back would
        # take the GIL and the database from the requests.  With duty < 1 a woken round
        # starts no sooner than a round's length * (1/duty - 1) after the last ended, so
        # the loops take at most that share of the time; a burst of wake-ups is one round.
        # The pause is capped at MAX_PAUSE_S, so that a submit to a slow server still waits
        # at most about a second for its round.  It was 0.25 s while a slot's turnover
        # waited for API-paced rounds; turnover now comes by ``wake_now`` without any
        # pause, and with 0.25 s a 0.4 s pass over 10k pending jobs (bench/scale.py) took
        # 60% of the GIL under a steady trickle of submits, starving the API.
        self._duty = duty
        # Set (with ``wake``) by the loops' own events, a task's end or a launch done: a
        # slot that turned over is handed out at once, without the duty pause, which is
        # there for storms of API writes.  See ``wake_now``.
        self._urgent = urgent or threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtuai-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake_now(self) -> None:
        """The next round at once, without the duty pause."""
        self._urgent.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        self._thread.join(timeout)

    def run_once(self) -> None:
        for step in self._steps:
            if self._stop.is_set():
                return
            try:
                step()
            except Exception as error:
                if lost_transaction(error):
                    # The database ended the step's transaction (a connection lost, or left
                    # idle past its limit by a starved process: store.lease): nothing of it
                    # was written, and the next round does it again.  Not a bug to page for.
                    log.warning(
                        "control step %s lost its database transaction, retried next round: %s",
                        _name(step),
                        " ".join(str(error).split())[:200],
                    )
                    continue
                log.exception("control step %s failed; it will be retried", _name(step))

    def _run(self) -> None:
        api_round = False  # this round was started by an API write (``wake`` alone)
        while not self._stop.is_set():
            self._wake.clear()
            self._urgent.clear()
            started = time.monotonic()
            self.run_once()
            ended = time.monotonic()
            took = ended - started
            woken = self._wake.wait(self._interval_s)
            if woken and self._duty < 1.0 and api_round:
                # The pause counts from the round's end: a wake-up after a quiet while (a
                # submit on an idle server) starts the round at once.  Only a round an API
                # write started is followed by one: a storm of writes is then paced, while
                # a submit made during a round for a task's end (the next job of a user
                # who waits for each) is not held back.
                pause = min(MAX_PAUSE_S, took * (1 / self._duty - 1))
                self._urgent.wait(max(0.0, pause - (time.monotonic() - ended)))
            api_round = woken and not self._urgent.is_set()


def _name(step: Callable[[], object]) -> str:
    return getattr(step, "__qualname__", repr(step))
