"""Callers by API-token hash, remembered for a moment so a request costs no query.

Authenticating a token reads three tables (token, user, memberships with their
tenants).  Under load that is a large part of a request's cost, so the answer
is kept for ``ttl_s`` seconds, keyed by the token's SHA-256 (the plain token is
never kept).  It stays correct because:

- any change to tokens, users, memberships or tenants made through a
  SQLAlchemy session of this process (ORM changes and ``update``/``delete``
  statements alike) empties every cache when it commits, so a revoked token or
  a removed membership is refused by the very next request here;
- an entry recorded while such a change was committing is thrown away (the
  generation it was read under is stale), so a reader never puts back an
  answer older than the change;
- the API worker processes of one server (``server/workers.py``) share a counter
  in a file of the state directory (``SharedCounter``, mapped in memory): a
  change committed by any of them bumps it, and every process's cache is
  emptied at its next lookup, so all of them refuse a revoked token at once;
- changes made by another server on the same database are seen after at most
  ``ttl_s`` seconds.

A busy caller need not wait for the database when its entry ends: ``lookup``
says when an entry is past half its life, and the proxy reads it again in the
background then (``api.deps.bearer_caller(..., cached=False)``), so an entry is never used after
``ttl_s`` and a caller with a request a second never meets a miss.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.session import ORMExecuteState

from virtuai.services.access import Caller
from virtuai.store.models import ApiTokenRow, MembershipRow, TenantRow, UserRow

DEFAULT_TTL_S = 2.0
MAX_ENTRIES = 10_000
_AUTH_TABLES = frozenset(
    t.__table__.name  # type: ignore[attr-defined]
    for t in (ApiTokenRow, UserRow, MembershipRow, TenantRow)
)
_CHANGED = "virtuai_auth_changed"


@dataclass(frozen=True, slots=True)
class _Entry:
    caller: Caller
    expires: float


class SharedCounter:
    """A 64-bit counter in a file, mapped in memory by every process of one server.

    Read without a lock (one aligned 8-byte load, ~0.2 us: checked per request);
    incremented under ``flock`` so that two processes' bumps never merge into one.
    It only grows, so a reader that saw a value sees any later bump as a change."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def read(self) -> int:
        value: int = struct.unpack_from("=Q", self._map)[0]
        return value

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            struct.pack_into("=Q", self._map, 0, self.read() + 1)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class _Generation:
    """Bumped after every commit that changed who may do what; shared by every cache
    of this process and, once ``share`` was called, by every process of the server."""

    def __init__(self) -> None:
        self._local = 0
        self._shared: SharedCounter | None = None
        self._lock = threading.Lock()
        self._installed = False

    @property
    def value(self) -> int:
        # Both parts only grow: their sum changes whenever either does.
        shared = self._shared
        return self._local if shared is None else self._local + shared.read()

    def share(self, path: os.PathLike[str] | str) -> None:
        """Count with the other processes that share ``path`` (a file in the state dir)."""
        counter = SharedCounter(path)
        with self._lock:
            self._shared = counter

    def bump(self) -> None:
        with self._lock:
            self._local += 1
            shared = self._shared
        if shared is not None:
            shared.bump()

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            self._installed = True
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _on_execute)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


GENERATION = _Generation()


def _touches_auth(objects: Any) -> bool:
    return any(getattr(o, "__tablename__", None) in _AUTH_TABLES for o in objects)


def _after_flush(session: Session, _context: Any) -> None:
    if _touches_auth(session.new) or _touches_auth(session.dirty) or _touches_auth(session.deleted):
        session.info[_CHANGED] = True
        GENERATION.bump()  # readers racing with this commit must not cache what they read


def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _AUTH_TABLES:
        state.session.info[_CHANGED] = True
        GENERATION.bump()


def _after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        GENERATION.bump()


def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


class TokenCache:
    """A small, thread-safe, time-bounded map from token hash to ``Caller``."""

    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        GENERATION.install()
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._generation = GENERATION.value
        self._lock = threading.Lock()

    def generation(self) -> int:
        """Read before looking the token up; hand it back to ``put``."""
        return GENERATION.value

    def get(self, token_hash: str) -> Caller | None:
        with self._lock:
            self._forget_if_changed()
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if entry.expires <= self._monotonic():
                del self._entries[token_hash]
                return None
            return entry.caller

    def lookup(self, token_hash: str) -> tuple[Caller | None, bool]:
        """The caller (as ``get``) and whether its entry is past half its life."""
        with self._lock:
            self._forget_if_changed()
            entry = self._entries.get(token_hash)
            if entry is None:
                return None, False
            left = entry.expires - self._monotonic()
            if left <= 0:
                del self._entries[token_hash]
                return None, False
            return entry.caller, left < self._ttl_s / 2

    def forget(self, token_hash: str) -> None:
        with self._lock:
            self._entries.pop(token_hash, None)

    def put(self, token_hash: str, caller: Caller, generation: int) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._forget_if_changed()
            if generation != self._generation:
                return  # something changed while it was read: do not keep it
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = _Entry(caller, self._monotonic() + self._ttl_s)

    def _forget_if_changed(self) -> None:
        current = GENERATION.value
        if current != self._generation:
            self._entries.clear()
            self._generation = current
