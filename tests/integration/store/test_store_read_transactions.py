"""Reading transactions never take SQLite's write lock, and cannot write by mistake."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import TenantRow


def _seed(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        session.add(rows.tenant("physics"))


def test_a_read_proceeds_while_a_writer_holds_the_lock(
    session_factory: sessionmaker[Session],
) -> None:
    _seed(session_factory)
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with transaction(session_factory) as session:
            session.add(rows.tenant("chemistry"))
            session.flush()
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30)
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.extend(_names(session_factory)), daemon=True
        )
        reader.start()
        reader.join(5)  # a reader queued behind the writer would still wait here
        assert not reader.is_alive()
        assert result == ["physics"]  # the snapshot before the writer's commit
    finally:
        release.set()
        thread.join(30)
    assert _names(session_factory) == ["chemistry", "physics"]


def _names(sessions: sessionmaker[Session]) -> list[str]:
    with read_transaction(sessions) as session:
        return sorted(session.scalars(select(TenantRow.name)))


def test_a_read_transaction_refuses_to_write(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    with (
        pytest.raises(RuntimeError, match="read-only"),
        read_transaction(session_factory) as session,
    ):
        session.add(rows.tenant("chemistry"))
    with (
        pytest.raises(RuntimeError, match="read-only"),
        read_transaction(session_factory) as session,
    ):
        session.execute(update(TenantRow).values(weight=2.0))
    assert _names(session_factory) == ["physics"]


def test_writing_transactions_still_write_after_reads(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    _seed(session_factory)
    _names(session_factory)  # the pooled connection was used for a read first
    with transaction(session_factory) as session:
        session.execute(update(TenantRow).values(weight=3.0))
    with read_transaction(session_factory) as session:
        assert session.scalars(select(TenantRow.weight)).one() == 3.0
