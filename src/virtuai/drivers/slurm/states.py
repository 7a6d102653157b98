"""Slurm's job states and reasons, read from ``squeue``/``sacct``, as virtuai outcomes.

A job still in Slurm's hands (pending, running, completing, suspended) has no
outcome yet; its state and reason are shown as Slurm prints them, e.g.
``PENDING (Resources)``.  An ended one becomes a ``TaskResult``: COMPLETED and
FAILED are exits with the step's code, TIMEOUT the walltime, OUT_OF_MEMORY an
OOM kill, CANCELLED a stop, and what the site itself did to the job (NODE_FAIL,
PREEMPTED, BOOT_FAIL, DEADLINE) a failure whose message names Slurm's state.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from virtuai.domain.workload import TaskOutcome
from virtuai.drivers.base import TaskResult

ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "STOPPED",
    }
)
SITE_ENDED = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"})


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One line of ``squeue``."""

    slurm_id: str
    state: str
    reason: str
    nodes: str
    comment: str

    @property
    def shown(self) -> str:
        """As a person reads it: ``PENDING (Resources)``, ``RUNNING on vsd-n[1-2]``."""
        if self.state == "PENDING" and self.reason and self.reason != "None":
            return f"PENDING ({self.reason})"
        if self.state == "RUNNING" and self.nodes:
            return f"RUNNING on {self.nodes}"
        return self.state


@dataclass(frozen=True, slots=True)
class AccountingEntry:
    """The allocation line of ``sacct`` (plus what its steps say)."""

    slurm_id: str
    state: str
    exit_code: int
    signal: int
    start: float | None
    end: float | None
    elapsed_s: int
    alloc_tres: str
    nodes: str
    reason: str = ""
    oom_step: bool = False
    # A step still active in accounting: the batch step can end (and with it the
    # allocation) while a step's slurmstepd is still checking for OOM kills and sending
    # its record, seconds later on a loaded node.
    steps_active: bool = False

    @property
    def ended(self) -> bool:
        return self.state not in ACTIVE

    def gpus(self) -> int:
        return tres_value(self.alloc_tres, "gres/gpu")


def tres_value(tres: str, name: str) -> int:
    for part in tres.split(","):
        key, _, value = part.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return 0


def parse_squeue(text: str) -> dict[str, QueueEntry]:
    """``squeue -h -o '%i|%T|%r|%N|%k'``."""
    out: dict[str, QueueEntry] = {}
    for line in text.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5 and parts[0].strip():
            slurm_id, state, reason, nodes, comment = (p.strip() for p in parts)
            out[slurm_id] = QueueEntry(slurm_id, state, reason, nodes, comment)
    return out


SACCT_FIELDS = "JobIDRaw,State,ExitCode,Start,End,ElapsedRaw,AllocTRES,NodeList,Reason"


def parse_sacct(text: str) -> dict[str, AccountingEntry]:
    """``sacct -n -P -o SACCT_FIELDS -j ids`` (allocations and their steps)."""
    jobs: dict[str, AccountingEntry] = {}
    oom: set[str] = set()
    active: set[str] = set()
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 9:
            continue
        raw, state, code, start, end, elapsed, tres, nodes, reason = parts
        state = state.split()[0] if state else ""  # "CANCELLED by 0" -> CANCELLED
        base, dot, _step = raw.partition(".")
        if dot:
            if state == "OUT_OF_MEMORY":
                oom.add(base)
            elif state in ACTIVE:
                active.add(base)
            continue
        exit_code, _, signal = code.partition(":")
        jobs[raw] = AccountingEntry(
            slurm_id=raw,
            state=state,
            exit_code=int(exit_code) if exit_code.isdigit() else 0,
            signal=int(signal) if signal.isdigit() else 0,
            start=_time(start),
            end=_time(end),
            elapsed_s=int(elapsed) if elapsed.isdigit() else 0,
            alloc_tres=tres,
            nodes=nodes,
            reason=reason if reason != "None" else "",
        )
    return {k: replace(v, oom_step=k in oom, steps_active=k in active) for k, v in jobs.items()}


def _time(text: str) -> float | None:
    if not text or text in {"Unknown", "None"}:
        return None
    try:
        # sacct prints local time without a zone; the login node's zone is the server's
        # in the common case.  Timestamps only feed usage durations.
        return dt.datetime.fromisoformat(text).astimezone(dt.UTC).timestamp()
    except ValueError:
        return None


def result_of(entry: AccountingEntry, now: float) -> TaskResult:
    """The outcome of an ended Slurm job, with Slurm's words in the message."""
    start, end = entry.start, entry.end or now
    state = entry.state
    detail = f"slurm job {entry.slurm_id}: {state}"
    if entry.reason:
        detail += f" ({entry.reason})"
    if state == "OUT_OF_MEMORY" or entry.oom_step:
        # The allocation may say FAILED when a step was OOM-killed: the step's word wins.
        message = f"slurm job {entry.slurm_id}: OUT_OF_MEMORY"
        return TaskResult(TaskOutcome.KILLED_OOM, None, start, end, message)
    if state == "TIMEOUT":
        return TaskResult(TaskOutcome.KILLED_WALLTIME, None, start, end, detail)
    if state == "CANCELLED":
        return TaskResult(TaskOutcome.KILLED_CANCEL, None, start, end, detail)
    if state in SITE_ENDED:
        return TaskResult(TaskOutcome.LOST, None, start, end, detail)
    if state == "COMPLETED":
        return TaskResult(TaskOutcome.EXITED, 0, start, end, detail)
    code = entry.exit_code or (128 + entry.signal if entry.signal else 1)
    return TaskResult(TaskOutcome.EXITED, code, start, end, detail, signal=entry.signal or None)
