"""One failing item never stops the others: per-item retries with backoff, driver calls with
a deadline.

A loop handles many items (tasks, jobs) per pass.  When the work on one raises
or hangs, only that item is affected:

- ``Backoff`` remembers, per item key, how often it failed and until when it
  must be left alone.  The wait doubles per failure (from ``base_s`` up to
  ``max_s``).  An error of the *platform's* kind (``VirtuaiError``: a driver
  that said no, a timeout) is retried ``attempts`` times; any other exception
  (a bug, a corrupt record) fewer times (``unexpected_attempts``), since
  retrying it rarely helps.  ``failed()`` returns the reason to give up with,
  once the item has used its attempts; the caller then ends the item with it.
- ``Deadline.call(fn, ...)`` runs a driver call on a worker thread and raises
  ``DriverTimeout`` if it does not return in time.  A hung call keeps its
  thread (Python cannot kill one) but no longer holds the loop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from virtuai.drivers.base import DriverBusy
from virtuai.errors import VirtuaiError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


# In every reason ``Backoff.failed`` gives: "<what> failed N time(s): <last error>".
GAVE_UP = " time(s): "


class DriverTimeout(DriverBusy):
    """A driver call did not return within its deadline."""


@dataclass
class _Failures:
    count: int
    retry_at: float
    last: str


class Backoff:
    def __init__(
        self,
        *,
        base_s: float = 0.5,
        max_s: float = 30.0,
        attempts: int = 5,
        unexpected_attempts: int = 2,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._attempts = attempts
        self._unexpected_attempts = unexpected_attempts
        self._mono = monotonic
        self._items: dict[Hashable, _Failures] = {}
        self._lock = threading.Lock()

    def ready(self, key: Hashable) -> bool:
        """False while ``key`` waits out its backoff."""
        with self._lock:
            failures = self._items.get(key)
            return failures is None or self._mono() >= failures.retry_at

    def failed(self, key: Hashable, error: BaseException, what: str) -> str | None:
        """Record a failure of ``what`` on ``key``; the reason to give up with, or None."""
        expected = isinstance(error, VirtuaiError)
        text = error.message if isinstance(error, VirtuaiError) else f"{type(error).__name__}: "
        if not expected:
            text += " ".join(str(error).split())[:200]
        with self._lock:
            failures = self._items.get(key) or _Failures(0, 0.0, "")
            failures.count += 1
            failures.last = text
            wait = min(self._max_s, self._base_s * 2 ** (failures.count - 1))
            failures.retry_at = self._mono() + wait
            self._items[key] = failures
            limit = self._attempts if expected else self._unexpected_attempts
            give_up = failures.count >= limit
        if give_up:
            self.forget(key)
            log.error("%s failed %d time(s), giving up: %s", what, failures.count, text)
            return f"{what} failed {failures.count}{GAVE_UP}{text}"
        if expected:
            log.warning("%s failed (retry in %.1fs): %s", what, wait, text)
        else:
            log.exception("%s failed (retry in %.1fs)", what, wait, exc_info=error)
        return None

    def succeeded(self, key: Hashable) -> None:
        self.forget(key)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)


class Deadline:
    """Driver calls on worker threads, each with a time limit."""

    def __init__(self, timeout_s: float, workers: int = 16) -> None:
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="driver")

    def submit(
        self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        return self._pool.submit(fn, *args, **kwargs)

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        future = self._pool.submit(fn, *args, **kwargs)
        return self.result(future, getattr(fn, "__qualname__", "driver call"))

    def result(self, future: concurrent.futures.Future[R], name: str) -> R:
        """The result of a ``submit``ted call, waiting at most ``timeout_s`` for it."""
        try:
            return future.result(self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise DriverTimeout(f"{name} did not return within {self.timeout_s:g}s") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
