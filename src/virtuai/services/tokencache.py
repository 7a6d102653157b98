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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtuai.services.access import Caller
from virtuai.services.generations import ChangeGeneration
from virtuai.store.models import ApiTokenRow, MembershipRow, TenantRow, UserRow

DEFAULT_TTL_S = 2.0
MAX_ENTRIES = 10_000
_AUTH_TABLES = frozenset(
    t.__table__.name  # type: ignore[attr-defined]
    for t in (ApiTokenRow, UserRow, MembershipRow, TenantRow)
)


@dataclass(frozen=True, slots=True)
class _Entry:
    caller: Caller
    expires: float


def _auth_object(obj: Any, _new_or_deleted: bool) -> bool:
    return getattr(obj, "__tablename__", None) in _AUTH_TABLES


def _auth_statement(statement: Any) -> bool:
    return getattr(getattr(statement, "table", None), "name", None) in _AUTH_TABLES


# Bumped after every commit that changed who may do what; shared by every cache of this
# process and, once ``share`` was called, by every process of the server.
GENERATION = ChangeGeneration("auth", _auth_object, _auth_statement)


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
