"""Runs the reconcile loops in a background thread, on a period or when woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


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
    ) -> None:
        self._steps = steps
        self._interval_s = interval_s
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtuai-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def run_once(self) -> None:
        for step in self._steps:
            if self._stop.is_set():
                return
            try:
                step()
            except Exception:
                log.exception("control step %s failed; it will be retried", _name(step))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.run_once()
            self._wake.wait(self._interval_s)


def _name(step: Callable[[], object]) -> str:
    return getattr(step, "__qualname__", repr(step))
