"""API worker processes (``server.api_workers``): started, watched and stopped here.

Why processes: the main process runs uvicorn, the API, the control loops and the
proxy under one GIL, so a scheduling pass over 10k pending jobs (about 0.1 s of
Python) holds every request that arrives meanwhile.  Each worker
(``server/apiworker.py``) is a process of its own with its own GIL that accepts on
the main process's listening socket; the main process keeps serving too, and keeps
everything else (loops, lease, launches, the node).

- Started by one long-lived thread of the main process (``PR_SET_PDEATHSIG`` fires
  when the *thread* that forked a child ends, so no short-lived thread forks).
- Each dies with the main process, even after kill -9 (``PR_SET_PDEATHSIG``).
- One that ends unasked is started again (a pause that doubles, to 10 s, when it
  keeps dying at once).  Its accepted connections are lost with it; a request it had
  answered 201 was committed first (store/groupcommit.py), so nothing acknowledged is.
- ``stop``: SIGTERM (uvicorn finishes the requests in flight), SIGKILL after a grace.
- Workers wake the main process's loops through one datagram socket pair: one byte
  per commit that gives them work (``WakeReceiver``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from virtuai.settings import Settings

log = logging.getLogger("virtuai")

STOP_GRACE_S = 10.0
_MAX_PAUSE_S = 10.0
# A worker that lived this long was not crashing at start: its next start is at once.
_HEALTHY_S = 30.0
AUTO_MAX = 4


def worker_count(setting: int | str, dialect: str, cores: int | None = None) -> int:
    """How many processes serve the API, the main one included.

    ``auto``: one per core, at most ``AUTO_MAX``, on PostgreSQL (concurrent writers);
    1 on SQLite, whose single write lock (and the group commit in front of it) gains
    nothing from writers in several processes (docs/benchmarks.md, "API workers")."""
    if setting != "auto":
        return int(setting)
    if dialect == "sqlite":
        return 1
    return max(1, min(cores or os.cpu_count() or 1, AUTO_MAX))


class WakeReceiver:
    """The main process's end: each datagram from a worker calls ``wake``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.theirs.set_inheritable(True)
        self._thread = threading.Thread(target=self._run, name="virtuai-worker-wakes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.ours.recv(64)
            except OSError:
                return  # closed: the server stops
            self._wake()

    def close(self) -> None:
        self.theirs.close()
        self.ours.shutdown(socket.SHUT_RDWR)
        self.ours.close()


class ApiWorkers:
    """``count`` worker processes on ``listener``, kept running until ``stop``."""

    def __init__(
        self,
        count: int,
        listener: socket.socket,
        settings: Settings,
        node: str,
        wake: Callable[[], None],
    ) -> None:
        self.count = count
        self._listener = listener
        self._settings = settings
        self._node = node
        self._wakes = WakeReceiver(wake)
        self._stopping = threading.Event()
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._thread = threading.Thread(target=self._supervise, name="virtuai-workers")

    def start(self) -> None:
        self._thread.start()

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.processes.values() if p.poll() is None]

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        spec: dict[str, Any] = {
            "index": index,
            "parent": os.getpid(),
            "settings": self._settings.model_dump(mode="json"),
            "node": self._node,
            "listen_fd": self._listener.fileno(),
            "wake_fd": self._wakes.theirs.fileno(),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "virtuai.server.apiworker"],
            stdin=subprocess.PIPE,
            pass_fds=(self._listener.fileno(), self._wakes.theirs.fileno()),
            # Its own process group: a terminal's Ctrl-C reaches the main process alone,
            # which stops the workers itself (a worker that died first would be restarted).
            start_new_session=True,
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode())
        process.stdin.close()
        log.info("API worker %d started (pid %d)", index, process.pid)
        return process

    def _supervise(self) -> None:
        started: dict[int, float] = {}
        pause: dict[int, float] = {}
        due: dict[int, float] = {i: 0.0 for i in range(1, self.count)}
        while not self._stopping.is_set():
            now = time.monotonic()
            for index, when in list(due.items()):
                if when <= now:
                    del due[index]
                    try:
                        process = self._spawn(index)
                    except OSError as error:
                        log.error("API worker %d could not start: %s", index, error)
                        due[index] = now + _MAX_PAUSE_S
                        continue
                    with self._lock:
                        self.processes[index] = process
                    started[index] = now
            with self._lock:
                ended = [(i, p) for i, p in self.processes.items() if p.poll() is not None]
                for index, _process in ended:
                    del self.processes[index]
            for index, process in ended:
                if self._stopping.is_set():
                    break
                lived = now - started.get(index, now)
                wait = 0.0 if lived >= _HEALTHY_S else min(_MAX_PAUSE_S, pause.get(index, 0.25) * 2)
                pause[index] = wait or 0.25
                self.restarts += 1
                log.warning(
                    "API worker %d (pid %d) ended (%s); starting it again in %.1f s",
                    index, process.pid, _how(process.returncode), wait,
                )  # fmt: skip
                due[index] = now + wait
            next_due = min(due.values(), default=now + 0.2) - time.monotonic()
            self._changed.wait(max(0.01, min(0.2, next_due)))
            self._changed.clear()
        self._terminate()

    def _terminate(self) -> None:
        with self._lock:
            processes = list(self.processes.values())
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("API worker pid %d did not stop in time: killed", process.pid)
                process.kill()
                process.wait()

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join(STOP_GRACE_S + 5)
        self._wakes.close()


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
