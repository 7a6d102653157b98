"""One failing item never stops the others; a crash at any step of a launch or of a finish
loses nothing and runs nothing twice.

The driver is the real local driver wrapped by ``Faulty``, which injects a
fault for chosen jobs only: raising, hanging, slow, or lying (a handle to
nothing).  These are declared fakes of *failure*; the tasks are real processes.
Crashes are ``Crash`` (a ``BaseException``, as a kill is: no handler catches
it) raised at one step; the control plane is then rebuilt over the same
database and task directories, as ``virtuai up`` after ``kill -9``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

import virtuai.control.lifecycle as lifecycle_module
from support.platform import Platform, public_dir, remove_state, retrying_lost_transactions
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
from virtuai.domain.clock import SystemClock
from virtuai.drivers.base import Handle, StopReason, TaskResult, TaskSpec
from virtuai.drivers.local import LocalDriver
from virtuai.errors import DriverError
from virtuai.store.db import transaction
from virtuai.store.models import TaskRow, UsageRow
from virtuai.store.usage import record_task_usage


class Crash(BaseException):
    """The process dies here."""


class Faulty:
    """The real local driver, with a fault injected for the jobs in ``faults[method]``."""

    name = "local"

    def __init__(self, real: LocalDriver) -> None:
        self.real = real
        # method -> {job id -> fault}; a fault is a callable run before (or instead of) it.
        self.faults: dict[str, dict[str, Callable[[], Any]]] = {}
        self.release_hang = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _fault(self, method: str, job_id: str) -> Any:
        fault = self.faults.get(method, {}).get(job_id)
        return None if fault is None else fault()

    def launch(self, spec: TaskSpec) -> Handle:
        if self._fault("launch", spec.job_id) == "lie":
            return {"task_dir": "/nonexistent/virtuai-task", "key": spec.key}
        return self.real.launch(spec)

    def observe(self, handle: Handle) -> TaskResult | None:
        self._fault("observe", str(handle["key"]).split(".")[0])
        return self.real.observe(handle)

    def stop(self, handle: Handle, reason: StopReason) -> None:
        self._fault("stop", str(handle["key"]).split(".")[0])
        self.real.stop(handle, reason)

    def release(self, handle: Handle) -> None:
        self._fault("release", str(handle["key"]).split(".")[0])
        self.real.release(handle)


def raising() -> None:
    raise DriverError("injected: the driver failed")


def corrupt() -> None:
    raise KeyError("task_dir")  # not a driver's kind of error: a bug or a corrupt record


def lying() -> str:
    return "lie"


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi")
    return platform.user("alice", "physics")


@pytest.fixture
def faulty(platform: Platform) -> Iterator[Faulty]:
    """The platform's life cycle with a fault-injecting driver and short timeouts."""
    driver = Faulty(platform.driver)
    platform.lifecycle = LifecycleLoop(
        platform.sessions,
        {"local": driver},
        SystemClock(),
        LifecycleConfig(
            workspaces_dir=platform.state_dir / "workspaces",
            kill_grace_s=1,
            call_timeout_s=0.5,
            # No test here needs a launch to time out; a loaded machine (CI) can take
            # seconds to create a tenant's user and spawn a supervisor.
            launch_timeout_s=20.0,
            launch_wait_s=0.2,
            retry_base_s=0.1,
            retry_attempts=3,
        ),
    )
    yield driver
    driver.release_hang.set()
    driver.faults.clear()


def test_an_observe_that_raises_affects_only_its_own_job(
    platform: Platform, alice: str, faulty: Faulty
) -> None:
    bad = platform.submit(alice, ["sleep", "0.2"])
    good = platform.submit(alice, ["sleep", "0.2"])
    faulty.faults["observe"] = {str(bad["id"]): raising}
    jobs = platform.wait_for([bad["id"], good["id"]])
    assert jobs[good["id"]]["state"] == "succeeded"
    assert jobs[bad["id"]]["state"] == "failed"
    assert "observing task" in jobs[bad["id"]]["reason"]
    assert "failed 3 time(s): injected: the driver failed" in jobs[bad["id"]]["reason"]


def test_a_hanging_observe_times_out_and_the_others_go_on(
    platform: Platform, alice: str, faulty: Faulty
) -> None:
    bad = platform.submit(alice, ["sleep", "0.2"])
    good = platform.submit(alice, ["sleep", "0.2"])
    faulty.faults["observe"] = {str(bad["id"]): lambda: faulty.release_hang.wait(30)}
    jobs = platform.wait_for([good["id"]])
    assert jobs[good["id"]]["state"] == "succeeded"
    ended = platform.wait_for([bad["id"]])[bad["id"]]
    assert ended["state"] == "failed" and "did not return within 0.5s" in ended["reason"]


def test_a_corrupt_record_fails_its_job_with_the_reason(
    platform: Platform, alice: str, faulty: Faulty
) -> None:
    bad = platform.submit(alice, ["sleep", "0.2"])
    good = platform.submit(alice, ["sleep", "0.2"])
    faulty.faults["observe"] = {str(bad["id"]): corrupt}
    jobs = platform.wait_for([bad["id"], good["id"]])
    assert jobs[good["id"]]["state"] == "succeeded"
    # An unexpected error is retried fewer times than a driver's own failure.
    assert "failed 2 time(s): KeyError: 'task_dir'" in jobs[bad["id"]]["reason"]


def test_a_slow_launch_does_not_hold_the_loop(
    platform: Platform, alice: str, faulty: Faulty
) -> None:
    slow_job = platform.submit(alice, ["true"])
    quick = platform.submit(alice, ["true"])
    # The slow launch lasts until the test lets it go (60 s at most): a tick that waited for
    # it would not come back before the gate opens.
    gate = threading.Event()
    faulty.faults["launch"] = {str(slow_job["id"]): lambda: gate.wait(60)}
    platform.scheduling.tick()
    retrying_lost_transactions(platform.lifecycle.tick)
    assert not gate.is_set()
    assert platform.job(slow_job["id"])["state"] == "starting"  # still launching
    gate.set()
    jobs = platform.wait_for([quick["id"]])
    assert jobs[quick["id"]]["state"] == "succeeded"
    assert platform.job(slow_job["id"])["state"] in ("starting", "running", "succeeded")
    assert platform.wait_for([slow_job["id"]])[slow_job["id"]]["state"] == "succeeded"


def test_a_lying_driver_ends_its_job_clearly(
    platform: Platform, alice: str, faulty: Faulty
) -> None:
    liar = platform.submit(alice, ["true"])
    good = platform.submit(alice, ["true"])
    faulty.faults["launch"] = {str(liar["id"]): lying}
    jobs = platform.wait_for([liar["id"], good["id"]], timeout=60)
    assert jobs[good["id"]]["state"] == "succeeded"
    assert jobs[liar["id"]]["state"] == "failed" and jobs[liar["id"]]["reason"]


# -- crash at every step of a launch and of a finish ---------------------------------------

CRASH_POINTS = [
    "launch:before",  # nothing started
    "launch:after",  # the process runs; its handle is not recorded
    "observe:after-end",  # the task ended; its outcome is not recorded
    "finish:usage",  # the job's end and usage are being written (rolled back)
    "release:before",  # the end is recorded; nothing released
    "release:after",  # released, but not marked so
]


@pytest.fixture
def counter() -> Iterator[Path]:
    directory = public_dir("vai-crash-")
    directory.chmod(0o1777)
    yield directory / "runs"
    remove_state(directory, [])


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_any_step_loses_nothing_and_runs_nothing_twice(
    platform: Platform,
    alice: str,
    faulty: Faulty,
    counter: Path,
    point: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = platform.submit(alice, ["sh", "-c", f'echo "$VIRTUAI_JOB_ID" >> {counter}'])
    key = str(job["id"])
    armed = {"on": True}

    def crash_once(after: Callable[[], Any] | None = None) -> Callable[[], Any]:
        def fault() -> Any:
            if after is not None:
                after()
            if armed["on"]:
                armed["on"] = False
                raise Crash(point)

        return fault

    method = point.partition(":")[0]
    if point == "launch:after":
        original = faulty.launch

        def launch_then_crash(spec: TaskSpec) -> Handle:
            handle = original(spec)
            if armed["on"] and spec.job_id == key:
                armed["on"] = False
                raise Crash(point)
            return handle

        faulty.launch = launch_then_crash  # type: ignore[method-assign]
    elif point == "observe:after-end":
        real_observe = faulty.observe

        def observe_then_crash(handle: Handle) -> TaskResult | None:
            result = real_observe(handle)
            if result is not None and armed["on"]:
                armed["on"] = False
                raise Crash(point)
            return result

        faulty.observe = observe_then_crash  # type: ignore[method-assign]
    elif point == "finish:usage":
        real_usage = record_task_usage

        def usage_then_crash(*args: Any) -> None:
            real_usage(*args)
            if armed["on"]:
                armed["on"] = False
                raise Crash(point)

        monkeypatch.setattr(lifecycle_module, "record_task_usage", usage_then_crash)
    elif point == "release:after":
        real_release = faulty.release

        def release_then_crash(handle: Handle) -> None:
            real_release(handle)
            if armed["on"]:
                armed["on"] = False
                raise Crash(point)

        faulty.release = release_then_crash  # type: ignore[method-assign]
    else:
        faulty.faults[method] = {key: crash_once()}
    crashed = False
    deadline = time.monotonic() + 30
    while not crashed:
        try:
            platform.tick()
        except Crash:
            crashed = True
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.05)
    monkeypatch.undo()
    again = platform.restarted()  # kill -9, then virtuai up: a new control plane, same state
    try:
        ended = again.wait_for([job["id"]])[job["id"]]
        assert ended["state"] == "succeeded", ended["reason"]
        for _ in range(3):
            again.tick()
        assert counter.read_text().split() == [key]  # ran exactly once
        with transaction(platform.sessions) as session:
            assert session.scalar(select(func.count()).select_from(UsageRow)) == 1
            tasks = session.scalars(select(TaskRow)).all()
            assert len(tasks) == 1 and tasks[0].released
    finally:
        platform.lifecycle = again.lifecycle


# -- what a pass writes ---------------------------------------------------------------------


def test_the_ends_a_pass_sees_are_one_commit(platform: Platform, alice: str) -> None:
    """Several tasks ended: their ends, their jobs' ends and usage are one commit; the
    releases' marks go with the next pass's; a pass with nothing to write commits nothing."""
    jobs = [platform.submit(alice, ["true"]) for _ in range(3)]
    platform.scheduling.tick()
    platform.lifecycle.start()  # start and launch all three
    results = [platform.state_dir / "tasks" / f"{job['id']}.0.0" / "result.json" for job in jobs]
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in results):
        assert time.monotonic() < deadline, "the tasks did not end"
        time.sleep(0.02)
    engine = platform.sessions.kw["bind"]
    commits: list[int] = []

    def count(_connection: Any) -> None:
        commits.append(1)

    event.listen(engine, "commit", count)
    try:
        platform.lifecycle.settle()
        assert len(commits) == 1
        assert {platform.job(job["id"])["state"] for job in jobs} == {"succeeded"}
        with transaction(platform.sessions) as session:
            assert session.scalar(select(func.count()).select_from(UsageRow)) == 3
        commits.clear()
        platform.lifecycle.settle()  # the marks of the releases done by the first pass
        assert len(commits) == 1
        with transaction(platform.sessions) as session:
            assert all(t.released for t in session.scalars(select(TaskRow)))
        commits.clear()
        platform.lifecycle.settle()
        platform.lifecycle.start()
        assert commits == []
    finally:
        event.remove(engine, "commit", count)


def test_a_connection_lost_mid_pass_fails_the_pass_not_its_jobs(
    platform: Platform,
    alice: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server ends the pass's connection while it finishes the first of two jobs (as
    PostgreSQL does to a transaction left idle too long): the pass fails with the database's
    own error, no job is charged with it, and the next pass finishes both."""
    engine = platform.sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to end a connection")
    jobs = [platform.submit(alice, ["true"]) for _ in range(2)]
    platform.scheduling.tick()
    platform.lifecycle.start()
    results = [platform.state_dir / "tasks" / f"{job['id']}.0.0" / "result.json" for job in jobs]
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in results):
        assert time.monotonic() < deadline, "the tasks did not end"
        time.sleep(0.02)
    finish_one = LifecycleLoop._finish_one
    cuts: list[int] = []

    def cut_then_finish(self: LifecycleLoop, session: Any, *args: Any) -> None:
        if len(cuts) < 2:  # two passes in a row
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            cuts.append(pid)
        finish_one(self, session, *args)

    monkeypatch.setattr(LifecycleLoop, "_finish_one", cut_then_finish)
    for _ in range(2):
        with pytest.raises(OperationalError):
            platform.lifecycle.settle()
        assert {platform.job(job["id"])["state"] for job in jobs} == {"running"}
    platform.lifecycle.settle()
    assert {platform.job(job["id"])["state"] for job in jobs} == {"succeeded"}
    assert "ending job" not in caplog.text  # neither job was charged with the database's fault
