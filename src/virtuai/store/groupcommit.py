"""Group commit: the writes of many concurrent requests in one transaction, one commit.

Every writing transaction on SQLite takes the one write lock (``BEGIN IMMEDIATE``) and
ends in an fsync (``synchronous=FULL``).  Sixteen clients submitting at once then queue
on that lock through SQLite's busy handler, which polls with sleeps of up to 100 ms:
the p99 of a submit was a second (docs/benchmarks.md, "API submits: group commit").

Here one writer thread takes every request waiting at that moment, runs each one's
work in a savepoint of one transaction (a request alone: in the transaction itself)
and commits once; only then is each request answered.  So:

- a request is answered only after the commit that holds its work (a 201 still means
  committed); a crash before the commit loses nothing that was acknowledged;
- one request's failure (a refusal, even a database error inside its savepoint) rolls
  back its own savepoint only and is raised to that request alone;
- if the commit itself fails, every request of the batch gets that error: none of
  them was recorded.

Nothing waits to fill a batch: a request arriving at an idle writer is committed at
once; batches form from the requests that arrive while the previous commit runs.

A savepoint per request costs two statements (round trips on PostgreSQL, where that
was more than the commit a batch saves), and refusals are rare.  So a batch first runs
without savepoints; only when one of its works fails is it rolled back and run again,
one savepoint per work.  A work may therefore run twice: everything it does must be
inside the transaction (the submit's is: checks, inserts, the answer's bytes).

Several processes of one server (API workers, ``server/workers.py``) each have a
writer.  On SQLite they would meet at its write lock, whose busy handler polls with
sleeps; ``lock_path`` (a file in the state directory) makes them take turns on an
``flock`` instead, which wakes the next one as soon as the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from virtuai.store.db import lost_transaction, transaction

T = TypeVar("T")

DEFAULT_MAX_BATCH = 64
# A writer idle this long ends, and the next request starts another (about 0.1 ms): a
# GroupCommit dropped by its owner (an application rebuilt, a test's platform) must not
# keep a thread, and through it its engine and pool, for the life of the process.
IDLE_EXIT_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Item:
    work: Callable[[Session], Any]
    wanted: Callable[[], bool]  # False: its caller gave up before its turn; left out
    settle: Callable[[bool, Any], None]  # (True, result) or (False, error), after the commit


class GroupCommit:
    """A writer thread committing the work of concurrent callers in shared transactions.

    ``work`` is a function of an open session; what it returns is handed to its caller
    once the transaction is committed, so it should return plain values (an answer's
    fields), not rows to be read after the commit.  The thread starts at the first call.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "virtuai-group-commit",
        lock_path: os.PathLike[str] | str | None = None,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> None:
        self._sessions = sessions
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._max_batch = max_batch
        self._idle_exit_s = idle_exit_s
        self._name = name
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # How many transactions and how many works they held (tests and benchmarks).
        self.batches = 0
        self.works = 0

    def submit(self, work: Callable[[Session], T]) -> Future[T]:
        """Queue ``work``; the future holds its result (or error) once committed."""
        future: Future[T] = Future()

        def settle(ok: bool, value: Any) -> None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        self._put(_Item(work, future.set_running_or_notify_cancel, settle))
        return future

    async def run(self, work: Callable[[Session], T]) -> T:
        """``submit`` for a coroutine: awaits the commit without holding a worker thread.

        The writer settles an asyncio future through the loop directly: chaining a
        ``concurrent.futures.Future`` (``asyncio.wrap_future``) cost the event loop
        about a tenth of a submit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, ok, value)

        self._put(_Item(work, lambda: not future.cancelled(), settle))
        return await future

    def _put(self, item: _Item) -> None:
        self._queue.put(item)
        # Under the lock: the writer's decision to end (queue empty) and this check are
        # ordered, so an item is never left behind a writer that has just ended.
        with self._lock:
            if self._thread is None:
                # A daemon: a server that exits (SIGTERM after uvicorn drained its
                # requests, or kill -9) leaves nothing acknowledged uncommitted.
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                batch = [self._queue.get(timeout=self._idle_exit_s)]
            except queue.Empty:
                if self._end_if_idle():
                    return
                continue
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except BaseException:  # never lose the thread: every later request would hang
                log.exception("group commit failed")

    def _end_if_idle(self) -> bool:
        with self._lock:
            if not self._queue.empty():
                return False
            self._thread = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            return True

    @property
    def running(self) -> bool:
        """Whether a writer thread is alive (it ends after ``idle_exit_s`` without work)."""
        return self._thread is not None

    def _commit(self, batch: list[_Item]) -> None:
        # A caller that gave up before its turn (its future cancelled) is left out.
        live = [item for item in batch if item.wanted()]
        if not live:
            return
        # First without savepoints (two statements per work, round trips on PostgreSQL);
        # if a work of the batch fails, everything is rolled back and the batch runs
        # again with one savepoint per work, so that the failure is that work's alone.
        try:
            done = self._run(live, savepoints=False)
        except _WorkFailed:  # rolled back
            done = self._run(live, savepoints=True)
        if done is None:
            return  # every work of the batch was settled with the error
        self.batches += 1
        self.works += len(live)
        for item, ok, value in done:
            item.settle(ok, value)

    def _run(self, live: list[_Item], *, savepoints: bool) -> list[tuple[_Item, bool, Any]] | None:
        """The batch in one transaction, committed; None: every work settled with the
        error already (a failed commit, a lost transaction).  Without savepoints, a work
        that fails in a batch raises ``_WorkFailed``, once everything is rolled back."""
        done: list[tuple[_Item, bool, Any]] = []
        try:
            with self._turn(), transaction(self._sessions) as session:
                if len(live) == 1 or not savepoints:
                    # Alone (a client in sequence), its failure rolls back the whole
                    # transaction, which is its own; in a batch, it sends the batch to
                    # the second run.
                    for item in live:
                        try:
                            done.append((item, True, item.work(session)))
                        except Exception as error:
                            if len(live) > 1 and not lost_transaction(error):
                                raise _WorkFailed from error
                            raise
                for item in live if len(live) > 1 and savepoints else ():
                    try:
                        with session.begin_nested():
                            value = item.work(session)
                    except Exception as error:  # its own savepoint is rolled back, no more
                        if lost_transaction(error):
                            raise
                        done.append((item, False, error))
                    else:
                        done.append((item, True, value))
        except _WorkFailed:
            raise  # rolled back: the batch runs again, with savepoints
        except BaseException as error:  # nothing of the batch was committed
            for item in live:
                item.settle(False, error)
            if not isinstance(error, Exception):
                raise
            return None
        return done

    @contextlib.contextmanager
    def _turn(self) -> Any:
        """The other processes' writers wait in the kernel meanwhile (``lock_path``)."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


class _WorkFailed(Exception):
    """A work of a batch run without savepoints failed: roll back, run it with them."""


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # cancelled meanwhile: its caller is gone
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
