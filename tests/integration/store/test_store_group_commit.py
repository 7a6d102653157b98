"""Group commit (store/groupcommit.py): many works, one transaction; each answered after
the commit, each failure its own, and a crash loses nothing that was answered."""

from __future__ import annotations

import datetime as dt
import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from virtuai.errors import InvalidRequest
from virtuai.store.db import create_db_engine, make_session_factory, read_transaction
from virtuai.store.groupcommit import GroupCommit
from virtuai.store.migrate import migrate
from virtuai.store.models import TenantRow

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SRC = Path(__file__).resolve().parents[3] / "src"


def add_tenant(name: str) -> object:
    def work(session: Session) -> str:
        session.add(TenantRow(name=name, created_at=NOW))
        session.flush()
        return name

    return work


def tenants(sessions: sessionmaker[Session]) -> set[str]:
    with read_transaction(sessions) as session:
        return set(session.scalars(select(TenantRow.name)))


def held_batch(group: GroupCommit, works: list[object]) -> list[Future[object]]:
    """Queue ``works`` while the writer is busy with another work, so that they form one
    batch of their own (the second)."""
    busy, release = threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        busy.set()
        release.wait(30)

    first = group.submit(hold)
    assert busy.wait(30)
    futures = [group.submit(work) for work in works]  # type: ignore[arg-type]
    release.set()
    first.result(30)
    return futures


def test_concurrent_works_share_one_commit_and_all_are_recorded(
    session_factory: sessionmaker[Session],
) -> None:
    group = GroupCommit(session_factory)
    futures = held_batch(group, [add_tenant(f"t{i}") for i in range(20)])
    assert [f.result(30) for f in futures] == [f"t{i}" for i in range(20)]
    assert group.batches == 2 and group.works == 21  # the holder, then the twenty at once
    assert tenants(session_factory) >= {f"t{i}" for i in range(20)}


def test_a_failing_work_is_refused_alone(session_factory: sessionmaker[Session]) -> None:
    group = GroupCommit(session_factory)
    group.submit(add_tenant("taken")).result(30)  # type: ignore[arg-type]

    def refused(session: Session) -> None:
        session.add(TenantRow(name="half-done", created_at=NOW))
        session.flush()
        raise InvalidRequest("no", field="name")

    works = [add_tenant("a"), refused, add_tenant("taken"), add_tenant("b")]
    futures = held_batch(group, works)
    assert futures[0].result(30) == "a" and futures[3].result(30) == "b"
    with pytest.raises(InvalidRequest):
        futures[1].result(30)
    with pytest.raises(IntegrityError):  # a database error, inside its savepoint only
        futures[2].result(30)
    names = tenants(session_factory)
    assert {"a", "b", "taken"} <= names and "half-done" not in names
    # Alone in its transaction (no savepoint then), a failure is its own all the same.
    with pytest.raises(InvalidRequest):
        group.submit(refused).result(30)
    assert "half-done" not in tenants(session_factory)
    assert group.submit(add_tenant("c")).result(30) == "c"  # type: ignore[arg-type]


def test_a_failed_commit_fails_every_work_of_the_batch_and_records_none(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    failing = make_session_factory(engine)
    broken = {"on": False}

    @event.listens_for(failing, "before_commit")
    def _fail(_session: Session) -> None:
        if broken["on"]:
            raise RuntimeError("the disk is gone")

    group = GroupCommit(failing)
    group.submit(lambda _s: None).result(30)  # the writer runs
    busy, release = threading.Event(), threading.Event()
    first = group.submit(lambda _s: (busy.set(), release.wait(30)))
    assert busy.wait(30)
    broken["on"] = True
    futures = [group.submit(add_tenant(f"lost{i}")) for i in range(3)]  # type: ignore[arg-type]
    release.set()
    for future in [first, *futures]:
        with pytest.raises(RuntimeError, match="the disk is gone"):
            future.result(30)
    broken["on"] = False
    assert not any(name.startswith("lost") for name in tenants(session_factory))
    assert group.submit(add_tenant("after")).result(30) == "after"  # type: ignore[arg-type]


CHILD = textwrap.dedent(
    """
    import datetime, sys, threading, time
    from virtuai.store.db import create_db_engine, make_session_factory
    from virtuai.store.groupcommit import GroupCommit
    from virtuai.store.models import TenantRow

    group = GroupCommit(make_session_factory(create_db_engine(sys.argv[1])))

    def add(name, stall=False):
        def work(session):
            session.add(TenantRow(name=name, created_at=datetime.datetime.now(datetime.UTC)))
            session.flush()
            if stall:
                print("stalled", flush=True)
                time.sleep(3600)
            return name
        return work

    print("acked", group.submit(add("acked")).result(), flush=True)
    busy, release = threading.Event(), threading.Event()
    group.submit(lambda s: (busy.set(), release.wait()))
    busy.wait()
    group.submit(add("in-batch"))
    group.submit(add("stalled", stall=True))
    release.set()
    time.sleep(3600)
    """
)


def test_kill_9_in_the_middle_of_a_batch_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/virtuai.db"
    engine = create_db_engine(url)
    migrate(engine)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["acked", "acked"]
        assert child.stdout.readline().strip() == "stalled"  # mid-batch, with a write done
    finally:
        child.kill()
        child.wait(30)
    # A fresh engine, as a restarted server opens the database after kill -9.
    sessions = make_session_factory(create_db_engine(url))
    names = tenants(sessions)
    assert "acked" in names
    assert "in-batch" not in names and "stalled" not in names  # the batch is all or nothing


def test_writers_of_several_processes_take_turns_on_the_lock_file(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """API workers' group commits (server/workers.py) queue on one ``flock``: while
    another holder has it (another process's writer), nothing is committed here."""
    import fcntl
    import os

    lock = tmp_path / "submits.lock"
    other = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)  # its own open file: as a process
    fcntl.flock(other, fcntl.LOCK_EX)
    group = GroupCommit(session_factory, lock_path=lock)
    try:
        pending = group.submit(add_tenant("waits"))
        with pytest.raises(TimeoutError):
            pending.result(timeout=0.5)
        assert "waits" not in tenants(session_factory)
        fcntl.flock(other, fcntl.LOCK_UN)
        pending.result(timeout=30)
        assert "waits" in tenants(session_factory)
    finally:
        os.close(other)


def test_a_batch_without_failures_takes_no_savepoints_and_one_with_one_is_redone(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """Savepoints cost two statements per work: a batch runs first without them, and
    again with one per work only when one of its works failed."""
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.split(maxsplit=1)[0].upper())

    group = GroupCommit(session_factory)
    runs = {"a": 0, "b": 0}

    def counted(name: str) -> object:
        def work(session: Session) -> str:
            runs[name] += 1
            session.add(TenantRow(name=name, created_at=NOW))
            session.flush()
            return name

        return work

    ok = held_batch(group, [add_tenant(f"s{i}") for i in range(5)])
    assert [f.result(30) for f in ok] == [f"s{i}" for i in range(5)]
    assert "SAVEPOINT" not in statements
    failing = held_batch(group, [counted("a"), add_tenant("s0"), counted("b")])  # s0: taken
    assert failing[0].result(30) == "a" and failing[2].result(30) == "b"
    with pytest.raises(IntegrityError):
        failing[1].result(30)
    assert runs == {"a": 2, "b": 1}  # a ran again, in its savepoint; b once, after the failure
    assert "SAVEPOINT" in statements
    with read_transaction(session_factory) as session:  # each recorded once
        names = list(session.scalars(select(TenantRow.name).where(TenantRow.name.in_(["a", "b"]))))
    assert sorted(names) == ["a", "b"]


def test_an_idle_writer_ends_and_the_next_work_starts_another(
    session_factory: sessionmaker[Session],
) -> None:
    """A dropped GroupCommit keeps no thread, and through it no engine, for ever; a work
    arriving just as an idle writer ends is committed all the same."""
    group = GroupCommit(session_factory, idle_exit_s=0.05)
    assert group.submit(add_tenant("first")).result(30) == "first"  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while group.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not group.running
    # Works from several threads, at gaps around the idle time, so that some arrive as
    # a writer decides to end: none is left behind.
    results: list[Future[object]] = []

    def submitter(target: GroupCommit, n: int) -> None:
        for i in range(15):
            time.sleep(0.02 * ((i + n) % 5))
            results.append(target.submit(add_tenant(f"w{n}-{i}")))  # type: ignore[arg-type]

    threads = [threading.Thread(target=submitter, args=(group, n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(str(f.result(30)) for f in results) == sorted(
        f"w{n}-{i}" for n in range(4) for i in range(15)
    )
    gone = weakref.ref(group)
    del group
    deadline = time.monotonic() + 30
    while gone() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    assert gone() is None
