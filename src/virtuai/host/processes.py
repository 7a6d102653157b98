"""Process identity: is this pid still the process that was recorded?

A pid is reused once its process is reaped, so every record of a process
(a task's supervisor, a task's process group, a virtual node's init) keeps its
birth time beside its pid.  Two clocks are in use, both from ``/proc``:

- ``create_time`` (psutil, seconds since the epoch, float): what the local
  driver's records hold (``supervisor.json``, ``started.json``, a virtual node
  handed to a task);
- ``start_ticks`` (clock ticks since boot, int): what the virtual-cluster
  runtime's init records hold; exact, no tolerance needed.

A zombie is never "the same process": it has exited, only its parent has not
reaped it yet (a container's init may never do so).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil

# psutil derives create_time from clock ticks and boot time: equal instants can
# differ in the last digits between reads.
CREATE_TIME_TOLERANCE_S = 0.05


def create_time(pid: int) -> float | None:
    """When ``pid`` was born (seconds since the epoch); ``None`` if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, born: float | str | None) -> bool:
    """Whether ``pid`` is still the live process born at ``born`` (``create_time``).

    ``born=None`` (a record that predates birth times) trusts any live process."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return born is None or abs(proc.create_time() - float(born)) < CREATE_TIME_TOLERANCE_S
    except psutil.Error:
        return False


def kill_group(pgid: int, born: float | str | None) -> None:
    """SIGKILL process group ``pgid`` unless its number now belongs to another process."""
    leader_born = create_time(pgid)
    # A dead leader's pid stays reserved while members of its group live, so a group
    # without a leader is still the task's.
    if (
        leader_born is not None
        and born is not None
        and abs(leader_born - float(born)) >= CREATE_TIME_TOLERANCE_S
    ):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; ``None`` if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields count from its end.
    rest = stat[stat.rfind(")") + 2 :].split()
    if len(rest) < 20 or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def same_start(pid: int | None, ticks: int | None) -> bool:
    """Whether ``pid`` is still the very process recorded with ``ticks`` (``start_ticks``)."""
    if not pid or ticks is None:
        return False
    return start_ticks(pid) == ticks
