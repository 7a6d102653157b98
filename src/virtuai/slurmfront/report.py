"""Slurm's views of jobs and nodes (squeue, sacct, sinfo), computed from virtuai's records.

Pure: rows in (the API's JSON objects as dicts), text out.  State letters and
names, Slurm's elapsed-time format, ``squeue -o`` format strings
(``%.18i %.9P %.8j ...``) and ``sacct --format`` field lists.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtuai.slurmfront.hostlist import compress

Row = Mapping[str, Any]

# virtuai state -> (squeue letter, Slurm state name)
STATES: Mapping[str, tuple[str, str]] = {
    "pending": ("PD", "PENDING"),
    "admitted": ("R", "RUNNING"),
    "starting": ("R", "RUNNING"),
    "running": ("R", "RUNNING"),
    "preempting": ("CG", "COMPLETING"),
    "succeeded": ("CD", "COMPLETED"),
    "failed": ("F", "FAILED"),
    "timed_out": ("TO", "TIMEOUT"),
    "cancelled": ("CA", "CANCELLED"),
    "preempted": ("PR", "PREEMPTED"),
}
ACTIVE = frozenset({"pending", "admitted", "starting", "running", "preempting"})
SQUEUE_DEFAULT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
SACCT_DEFAULT = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"
_REASONS = (
    ("depend", "Dependency"),
    ("waiting for job", "Dependency"),
    ("quota", "QOSGrpLimit"),
    ("at most", "JobArrayTaskLimit"),
    ("throttl", "JobArrayTaskLimit"),
    ("priority", "Priority"),
    ("queue", "Priority"),
    ("capacity", "Resources"),
    ("free", "Resources"),
    ("resources", "Resources"),
    ("never", "BadConstraints"),
)


def state_letter(state: str) -> str:
    return STATES.get(state, ("??", state.upper()))[0]


def state_name(state: str) -> str:
    return STATES.get(state, ("??", state.upper()))[1]


def virtuai_states(text: str) -> frozenset[str]:
    """``-t PD,R`` or ``--state=pending,RUNNING`` or ``all`` -> virtuai states."""
    wanted: set[str] = set()
    for word in text.split(","):
        token = word.strip().upper()
        if token == "ALL":
            return frozenset(STATES)
        found = {s for s, (letter, name) in STATES.items() if token in (letter, name)}
        found |= {s for s in STATES if s.upper() == token}
        if token == "CD":
            found.add("succeeded")
        if not found:
            raise ValueError(f"unknown job state {word.strip()!r}")
        wanted |= found
    return frozenset(wanted)


def slurm_elapsed(seconds: float) -> str:
    """squeue's TIME: ``M:SS``, ``H:MM:SS`` or ``D-HH:MM:SS``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def slurm_limit(seconds: int | None) -> str:
    if not seconds:
        return "UNLIMITED"
    return slurm_elapsed(seconds)


def job_id(row: Row) -> str:
    """``12`` or ``12_3`` for an array element, as Slurm names them."""
    if row.get("array_id") is not None and row.get("array_index") is not None:
        return f"{row['array_id']}_{row['array_index']}"
    return str(row.get("id", ""))


def reason_code(reason: str) -> str:
    """A Slurm-like reason word for a pending job (``Resources``, ``Priority``, ...)."""
    lowered = reason.lower()
    for needle, code in _REASONS:
        if needle in lowered:
            return code
    return reason or "None"


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def elapsed_of(row: Row, now: dt.datetime) -> float:
    started = parse_time(row.get("started_at"))
    if started is None:
        return 0.0
    finished = parse_time(row.get("finished_at")) or now
    return (finished - started).total_seconds()


def nodes_of(row: Row) -> list[str]:
    return list(dict.fromkeys(str(p["node"]) for p in row.get("placement") or []))


@dataclass(frozen=True, slots=True)
class View:
    """What the views need beside the row: the clock and each node's pool."""

    now: dt.datetime
    pools: Mapping[str, str]

    def partition(self, row: Row) -> str:
        pools = sorted({self.pools.get(node, "") for node in nodes_of(row)} - {""})
        return ",".join(pools) or "-"


def _cpus(row: Row) -> int:
    res = row.get("resources") or {}
    return int(float(res.get("cpu") or 0) * int(row.get("tasks") or 1) + 0.999)


SQUEUE_FIELDS: Mapping[str, Callable[[Row, View], str]] = {
    "i": lambda r, v: job_id(r),
    "A": lambda r, v: str(r.get("id", "")),
    "F": lambda r, v: str(r.get("array_id") or r.get("id", "")),
    "K": lambda r, v: "N/A" if r.get("array_index") is None else str(r["array_index"]),
    "P": lambda r, v: v.partition(r),
    "j": lambda r, v: str(r.get("name", "")),
    "u": lambda r, v: str(r.get("user", "")),
    "a": lambda r, v: str(r.get("tenant", "")),
    "t": lambda r, v: state_letter(str(r.get("state", ""))),
    "T": lambda r, v: state_name(str(r.get("state", ""))),
    "M": lambda r, v: slurm_elapsed(elapsed_of(r, v.now)),
    "l": lambda r, v: slurm_limit(r.get("time_limit")),
    "D": lambda r, v: str(len(nodes_of(r)) or 1),
    "C": lambda r, v: str(_cpus(r)),
    "q": lambda r, v: str(r.get("priority", "")),
    "Q": lambda r, v: str(r.get("priority", "")),
    "r": lambda r, v: reason_code(str(r.get("reason") or "")),
    "R": lambda r, v: (
        compress(nodes_of(r))
        if r.get("state") != "pending"
        else f"({reason_code(str(r.get('reason') or ''))})"
    ),
    "N": lambda r, v: compress(nodes_of(r)),
    "V": lambda r, v: _stamp(r.get("submitted_at")),
    "S": lambda r, v: _stamp(r.get("started_at")) if r.get("started_at") else "N/A",
    "e": lambda r, v: _stamp(r.get("finished_at")) if r.get("finished_at") else "N/A",
    "Z": lambda r, v: str(r.get("workdir") or ""),
    "k": lambda r, v: "",
    "b": lambda r, v: str((r.get("resources") or {}).get("gpu") or "N/A"),
}
SQUEUE_HEADERS = {
    "i": "JOBID",
    "A": "JOBID",
    "F": "ARRAY_JOB_ID",
    "K": "ARRAY_TASK_ID",
    "P": "PARTITION",
    "j": "NAME",
    "u": "USER",
    "a": "ACCOUNT",
    "t": "ST",
    "T": "STATE",
    "M": "TIME",
    "l": "TIME_LIMIT",
    "D": "NODES",
    "C": "CPUS",
    "q": "QOS",
    "Q": "PRIORITY",
    "r": "REASON",
    "R": "NODELIST(REASON)",
    "N": "NODELIST",
    "V": "SUBMIT_TIME",
    "S": "START_TIME",
    "e": "END_TIME",
    "Z": "WORK_DIR",
    "k": "COMMENT",
    "b": "TRES_PER_NODE",
}
_FORMAT_RE = re.compile(r"%(\.)?(-)?([0-9]*)([A-Za-z])")


def squeue_lines(rows: Sequence[Row], view: View, fmt: str, header: bool = True) -> list[str]:
    """``squeue -o FMT``: ``%[.][-][width]letter``; ``.`` right-aligns, width truncates."""
    specs = list(_FORMAT_RE.finditer(fmt))
    for spec in specs:
        if spec.group(4) not in SQUEUE_FIELDS:
            raise ValueError(f"squeue: unknown format field %{spec.group(4)}")

    def line(cells: Callable[[str], str]) -> str:
        out, last = [], 0
        for spec in specs:
            out.append(fmt[last : spec.start()])
            text = cells(spec.group(4))
            width = int(spec.group(3)) if spec.group(3) else 0
            if width:
                text = text[:width]
                text = text.rjust(width) if spec.group(1) else text.ljust(width)
            out.append(text)
            last = spec.end()
        out.append(fmt[last:])
        return "".join(out).rstrip()

    lines = [line(lambda code: SQUEUE_HEADERS[code])] if header else []
    lines += [line(lambda code, r=row: SQUEUE_FIELDS[code](r, view)) for row in rows]  # type: ignore[misc]
    return lines


def _stamp(value: Any) -> str:
    when = parse_time(value)
    return "Unknown" if when is None else when.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def _exit_code(row: Row) -> str:
    code = row.get("exit_code")
    if code is None:
        return "0:0"
    code = int(code)
    return f"0:{code - 128}" if code > 128 else f"{code}:0"


SACCT_FIELDS: Mapping[str, Callable[[Row, View], str]] = {
    "jobid": lambda r, v: job_id(r),
    "jobidraw": lambda r, v: str(r.get("id", "")),
    "jobname": lambda r, v: str(r.get("name", "")),
    "partition": lambda r, v: v.partition(r),
    "account": lambda r, v: str(r.get("tenant", "")),
    "user": lambda r, v: str(r.get("user", "")),
    "alloccpus": lambda r, v: str(_cpus(r)),
    "ncpus": lambda r, v: str(_cpus(r)),
    "allocnodes": lambda r, v: str(len(nodes_of(r))),
    "nnodes": lambda r, v: str(len(nodes_of(r)) or 1),
    "ntasks": lambda r, v: str(r.get("tasks", "")),
    "state": lambda r, v: state_name(str(r.get("state", ""))),
    "exitcode": lambda r, v: _exit_code(r),
    "elapsed": lambda r, v: _sacct_elapsed(elapsed_of(r, v.now)),
    "elapsedraw": lambda r, v: str(int(elapsed_of(r, v.now))),
    "timelimit": lambda r, v: slurm_limit(r.get("time_limit")),
    "submit": lambda r, v: _stamp(r.get("submitted_at")),
    "start": lambda r, v: _stamp(r.get("started_at")),
    "end": lambda r, v: _stamp(r.get("finished_at")),
    "nodelist": lambda r, v: compress(nodes_of(r)) or "None assigned",
    "qos": lambda r, v: str(r.get("priority", "")),
    "reqmem": lambda r, v: f"{int((r.get('resources') or {}).get('memory') or 0) // 2**20}M",
    "allocgres": lambda r, v: f"gpu:{(r.get('resources') or {}).get('gpu') or 0}",
    "restarts": lambda r, v: str(r.get("restart_count", 0)),
    "reason": lambda r, v: str(r.get("reason") or "None"),
}
SACCT_HEADERS = {
    "jobid": "JobID",
    "jobidraw": "JobIDRaw",
    "jobname": "JobName",
    "partition": "Partition",
    "account": "Account",
    "user": "User",
    "alloccpus": "AllocCPUS",
    "ncpus": "NCPUS",
    "allocnodes": "AllocNodes",
    "nnodes": "NNodes",
    "ntasks": "NTasks",
    "state": "State",
    "exitcode": "ExitCode",
    "elapsed": "Elapsed",
    "elapsedraw": "ElapsedRaw",
    "timelimit": "Timelimit",
    "submit": "Submit",
    "start": "Start",
    "end": "End",
    "nodelist": "NodeList",
    "qos": "QOS",
    "reqmem": "ReqMem",
    "allocgres": "AllocGRES",
    "restarts": "Restarts",
    "reason": "Reason",
}


def _sacct_elapsed(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def sacct_lines(
    rows: Sequence[Row], view: View, fields: str, *, steps: bool, header: bool = True
) -> list[str]:
    """``sacct --format=a,b%20``: fixed-width columns (default 10, wider with ``%N``)."""
    columns: list[tuple[str, int]] = []
    for item in fields.split(","):
        name, _, width = item.strip().partition("%")
        key = name.lower()
        if key not in SACCT_FIELDS:
            raise ValueError(f"sacct: unknown field {name!r}")
        columns.append((key, int(width) if width.isascii() and width.isdigit() else 10))

    def line(cells: Sequence[str]) -> str:
        return " ".join(
            cell[:width].ljust(width)
            if key in ("jobname", "jobid", "nodelist")
            else cell[:width].rjust(width)
            for cell, (key, width) in zip(cells, columns, strict=True)
        ).rstrip()

    out: list[str] = []
    if header:
        out.append(line([SACCT_HEADERS[key] for key, _ in columns]))
        out.append(" ".join("-" * width for _, width in columns))
    for row in rows:
        out.append(line([SACCT_FIELDS[key](row, view) for key, _ in columns]))
        if steps and row.get("state") not in ("pending",):
            step = {**row, "name": "batch"}
            cells = [SACCT_FIELDS[key](step, view) for key, _ in columns]
            cells = [
                f"{job_id(row)}.batch" if key == "jobid" else cell
                for cell, (key, _) in zip(cells, columns, strict=True)
            ]
            out.append(line(cells))
    return out


def sinfo_lines(nodes: Sequence[Row]) -> list[str]:
    """``sinfo``: PARTITION AVAIL TIMELIMIT NODES STATE NODELIST, one row per pool and state."""
    groups: dict[tuple[str, str], list[str]] = {}
    first_pool = str(nodes[0].get("pool", "")) if nodes else ""
    for node in nodes:
        groups.setdefault((str(node.get("pool", "")), _node_state(node)), []).append(
            str(node.get("name", ""))
        )
    rows = [["PARTITION", "AVAIL", "TIMELIMIT", "NODES", "STATE", "NODELIST"]]
    for (pool, state), names in sorted(groups.items()):
        label = f"{pool}*" if pool == first_pool else pool
        rows.append([label, "up", "infinite", str(len(names)), state, compress(names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        " ".join(
            cell.rjust(width) if i in (0, 1, 2, 3) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _node_state(node: Row) -> str:
    capacity, allocated = node.get("capacity") or {}, node.get("allocated") or {}
    used = [float(allocated.get(k) or 0) for k in ("cpu", "memory", "gpu")]
    if not any(used):
        return "idle"
    full = float(allocated.get("cpu") or 0) >= float(capacity.get("cpu") or 0)
    return "alloc" if full else "mix"
