"""``LoopRunner``'s wake-ups: API writes after an API write's round get the duty pause; the
loops' own events, and the first write after another kind of round, do not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from virtuai.control import runner as runner_module
from virtuai.control.runner import LoopRunner

ROUND_S = 0.05
DUTY = 0.01  # a woken round waits ROUND_S * 99 (about 5 s) after the last one ended


class Rounds:
    def __init__(self) -> None:
        self.started: list[float] = []
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.started.append(time.monotonic())
        time.sleep(ROUND_S)

    def count(self) -> int:
        with self.lock:
            return len(self.started)

    def wait_for(self, n: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"round {n} did not start in {timeout} s"
            time.sleep(0.01)
        return self.started[n - 1]


Looping = tuple[Rounds, LoopRunner, threading.Event]


@pytest.fixture
def rounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Looping]:
    monkeypatch.setattr(runner_module, "MAX_PAUSE_S", 60.0)
    counted, wake = Rounds(), threading.Event()  # ``wake``: what an API write sets
    loop = LoopRunner([counted.step], 600.0, wake, duty=DUTY)
    loop.start()
    counted.wait_for(1, 10)
    yield counted, loop, wake
    loop.stop()


def test_an_api_wake_right_after_an_api_round_waits_the_duty_pause(
    rounds: Looping,
) -> None:
    counted, _, wake = rounds
    time.sleep(ROUND_S * 2)  # the first round (not an API write's) has ended
    wake.set()
    counted.wait_for(2, 10)  # at once: the round before was not an API write's
    time.sleep(ROUND_S * 2)
    wake.set()
    time.sleep(1.5)
    assert counted.count() == 2  # still pausing: a storm of writes is one round later


def test_an_api_wake_after_a_round_for_the_loops_own_event_starts_at_once(
    rounds: Looping,
) -> None:
    counted, loop, wake = rounds
    time.sleep(ROUND_S * 2)
    loop.wake_now()  # a task ended
    counted.wait_for(2, 10)
    time.sleep(ROUND_S * 2)  # that round has ended
    woken = time.monotonic()
    wake.set()  # a submit right after it
    assert counted.wait_for(3, 10) - woken < 1.0


def test_the_loops_own_events_skip_the_pause(rounds: Looping) -> None:
    counted, loop, wake = rounds
    time.sleep(ROUND_S * 2)
    wake.set()  # an API write's round...
    counted.wait_for(2, 10)
    time.sleep(ROUND_S * 2)
    wake.set()  # ...and another API write: pausing...
    time.sleep(0.2)
    assert counted.count() == 2
    woken = time.monotonic()
    loop.wake_now()  # ...a task ended: now
    assert counted.wait_for(3, 10) - woken < 2.0


def test_a_wake_after_a_quiet_while_starts_at_once(rounds: Looping) -> None:
    counted, _, wake = rounds
    pause = ROUND_S * (1 / DUTY - 1)
    time.sleep(pause + 0.5)  # idle for longer than the pause
    woken = time.monotonic()
    wake.set()
    assert counted.wait_for(2, 10) - woken < pause / 2


def test_a_step_that_lost_its_transaction_is_a_warning_and_the_next_steps_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # PostgreSQL ended the step's transaction (left idle too long by a starved process):
    # nothing of it was written and the next round retries it; a traceback would page an
    # operator for what is not a bug.  Any other error keeps its traceback.
    ran: list[str] = []

    def lost() -> None:
        ran.append("lost")
        raise OperationalError("UPDATE jobs ...", {}, Exception("server closed the connection"))

    def buggy() -> None:
        ran.append("buggy")
        raise KeyError("task_dir")

    runner = LoopRunner([lost, buggy, lambda: ran.append("after")], 1.0, threading.Event())
    with caplog.at_level("WARNING", logger=runner_module.__name__):
        runner.run_once()
    assert ran == ["lost", "buggy", "after"]
    lost_record, bug_record = caplog.records
    assert lost_record.levelname == "WARNING" and lost_record.exc_info is None
    assert "lost its database transaction" in lost_record.getMessage()
    assert "server closed the connection" in lost_record.getMessage()
    assert bug_record.levelname == "ERROR" and bug_record.exc_info is not None
