"""Workload traces: one job per CSV row.

Columns (a header row names them, in any order; names are case-insensitive;
other columns are ignored, except a name that contains one of these, such as
``num_gpus``, which is an error: it is most likely a misnamed column that would
otherwise silently be left out; a row with more cells than the header is an error
too)::

    submit_time  required  seconds from the start of the trace (a number >= 0)
    duration     required  how long the job runs if nothing stops it, in seconds
    walltime     optional  its time limit, in seconds; a job whose duration is longer
                           is killed at the limit and ends ``timed_out``; empty = none
    tenant       required  the tenant's name
    cpu          required  CPUs per task: 2, 0.5 or 500m
    memory       required  memory per task: bytes, or 512Mi, 4Gi, 4G ...
    gpus         optional  GPUs per task (default 0; ``gpu`` is accepted too)
    tasks        optional  tasks of the gang, placed all or nothing (default 1)
    priority     optional  a priority class name of the cluster file (low, normal,
                           high by default) or a number (default normal); a job is
                           preemptible unless its class says not (``high``)
    id           optional  the job's id (unique); default: its row number
    pool         optional  run only on this pool's nodes; empty = any pool
    checkpoint_interval  optional  how often the job checkpoints (0: never, a preempted
                           job starts over); empty = the policy's ``checkpoint_interval``
    restart_overhead     optional  what each restart spends before it makes progress
                           (loading the checkpoint); empty = the policy's

Durations and walltimes may also be written ``90s``, ``30m``, ``2h``, ``1d`` or
in Slurm's ``D-HH:MM:SS`` forms; a plain number is always seconds.  Every time is at
most ``textfile.MAX_SECONDS`` (about 317 years).  Errors name
the file, the line and the column: ``trace.csv line 12: memory: cannot read ...``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import validate_name
from virtuai.domain.units import format_cpu, format_memory, parse_cpu, parse_duration, parse_memory
from virtuai.domain.workload import PriorityClass
from virtuai.errors import InvalidRequest
from virtuai.sim.cluster import DEFAULT_PRIORITIES
from virtuai.sim.textfile import MAX_SECONDS, CsvRows, unreadable

__all__ = [
    "COLUMNS", "TraceJob", "check_pools", "check_tenants", "parse_trace", "read_trace",
    "write_trace",
]  # fmt: skip

REQUIRED = ("submit_time", "duration", "tenant", "cpu", "memory")
OPTIONAL = (
    "walltime", "gpus", "tasks", "priority", "id", "pool", "checkpoint_interval",
    "restart_overhead",
)  # fmt: skip
COLUMNS = (
    "submit_time", "duration", "walltime", "tenant", "cpu", "memory", "gpus", "tasks", "priority",
    "id", "pool", "checkpoint_interval", "restart_overhead",
)  # fmt: skip
CHECKPOINT_COLUMNS = ("checkpoint_interval", "restart_overhead")
_ALIASES = {"gpu": "gpus"}
PAI_STATES = frozenset({"terminated", "failed", "running", "waiting"})  # its 4th column
DEFAULT_PRIORITY = "normal"


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace, in the scheduler's units (millicores, bytes, seconds)."""

    id: str
    submit: float
    duration: float
    walltime: float  # math.inf: no limit
    tenant: str
    per_task: Resources
    tasks: int = 1
    priority: int = DEFAULT_PRIORITIES[DEFAULT_PRIORITY].value
    pool: str | None = None
    line: int = 0  # where it was read (0: built in code)
    preemptible: bool = True
    # Checkpoint/restart cost of this job (seconds); None: the replayed policy's.
    checkpoint_interval: float | None = None
    restart_overhead: float | None = None

    @property
    def run_s(self) -> float:
        """How long it holds its resources once started: its duration, cut at the walltime."""
        return min(self.duration, self.walltime)

    @property
    def times_out(self) -> bool:
        return self.duration > self.walltime

    @property
    def total(self) -> Resources:
        return self.per_task.times(self.tasks)


class _Row:
    """Parsers of one trace's cells, memoised: a trace has few distinct values per column."""

    def __init__(self, source: str, priorities: Mapping[str, PriorityClass]) -> None:
        self.source = source
        self.priorities = priorities
        self.by_value = {c.value: c for c in priorities.values()}
        self.line = 0
        self._cpu: dict[str, int] = {}
        self._memory: dict[str, int] = {}
        self._tenant: dict[str, str] = {}

    def error(self, column: str, message: str) -> InvalidRequest:
        message = message.removeprefix(f"{column}: ")
        return InvalidRequest(f"{self.source} line {self.line}: {column}: {message}", field=column)

    def seconds(self, column: str, raw: str, *, positive: bool) -> float:
        try:
            value = float(raw)
        except ValueError:
            try:
                value = float(parse_duration(raw, field=column))
            except InvalidRequest as exc:
                raise self.error(column, exc.message) from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise self.error(column, f"must be a number of seconds {bound}, not {raw!r}")
        if value > MAX_SECONDS:
            raise self.error(
                column, f"must be at most {MAX_SECONDS:,} seconds (317 years), not {raw!r}"
            )
        return value

    def cached(
        self, column: str, raw: str, cache: dict[str, int], parse: Callable[..., int]
    ) -> int:
        try:
            return cache[raw]
        except KeyError:
            pass
        try:
            value = cache[raw] = parse(raw, field=column)
        except InvalidRequest as exc:
            raise self.error(column, exc.message) from None
        return value

    def count(self, column: str, raw: str, default: int, minimum: int) -> int:
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise self.error(column, f"must be a whole number >= {minimum}, not {raw!r}")
        return value

    def tenant(self, raw: str) -> str:
        try:
            return self._tenant[raw]
        except KeyError:
            pass
        if not raw:
            raise self.error("tenant", "is required")
        try:
            name = self._tenant[raw] = validate_name(raw, field="tenant")
        except InvalidRequest as exc:
            raise self.error("tenant", exc.message.removeprefix("tenant ")) from None
        return name

    def priority(self, raw: str) -> tuple[int, bool]:
        """(value, preemptible): a class name, or a number (preemptible unless a class of
        that value is not)."""
        known = self.priorities.get(raw or DEFAULT_PRIORITY)
        if known is not None:
            return known.value, known.preemptible
        if not raw:
            return 0, True
        try:
            value = int(raw)
        except ValueError:
            names = ", ".join(sorted(self.priorities, key=lambda n: self.priorities[n].value))
            raise self.error(
                "priority", f"unknown priority class {raw!r}; use a number or one of {names}"
            ) from None
        same = self.by_value.get(value)
        return value, same.preemptible if same is not None else True


def read_trace(
    path: Path,
    priorities: Mapping[str, PriorityClass] = DEFAULT_PRIORITIES,
    *,
    name: str | None = None,
) -> list[TraceJob]:
    """Read a trace CSV; jobs come back in submission order (ties: file order)."""
    source = name or path.name
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets' BOM
            return parse_trace(handle, source, priorities)
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, source, exc) from None


def parse_trace(
    handle: Iterable[str],
    source: str = "trace.csv",
    priorities: Mapping[str, PriorityClass] = DEFAULT_PRIORITIES,
) -> list[TraceJob]:
    reader = CsvRows(handle, source)
    row = _Row(source, priorities)
    header = next(reader, None)
    if header is None:
        raise InvalidRequest(f"{source} line 1: empty file; expected a header row", field=None)
    names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    public = _public_layout(header) if "submit_time" not in names else None
    if public is not None:
        what, fmt = public
        raise InvalidRequest(
            f"{source} line 1: not a trace of ours (no submit_time column); {what}? "
            f"use --format {fmt}",
            field=None,
        )
    known = set(COLUMNS) | set(_ALIASES)
    for name in names:
        if name and name not in known:
            like = [c for c in COLUMNS if c.rstrip("s") in name]
            if like:
                raise InvalidRequest(
                    f"{source} line 1: unknown column {name!r}; did you mean {like[0]!r}? "
                    f"(columns: {', '.join(COLUMNS)})",
                    field=name,
                )
    column = {n: i for i, n in reversed(list(enumerate(names)))}
    for required in REQUIRED:
        if required not in column:
            raise InvalidRequest(
                f"{source} line 1: missing column {required!r} "
                f"(needs {', '.join(REQUIRED)}; may have {', '.join(OPTIONAL)})",
                field=required,
            )
    idx = [column.get(n, -1) for n in (*REQUIRED, *OPTIONAL)]
    width = max(idx) + 1
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    for cells in reader:
        row.line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
            raise InvalidRequest(
                f"{source} line {row.line}: {len(cells)} cells but the header names "
                f"{len(header)} columns",
                field=None,
            )
        get = [c.strip() for c in cells]
        if len(get) < width:
            get.extend([""] * (width - len(get)))
        (i_sub, i_dur, i_ten, i_cpu, i_mem, i_wall, i_gpu, i_tasks, i_prio, i_id, i_pool) = idx[:11]
        interval_raw, overhead_raw = (get[i] if i >= 0 else "" for i in idx[11:])
        submit = row.seconds("submit_time", get[i_sub], positive=False)
        duration = row.seconds("duration", get[i_dur], positive=False)
        wall_raw = get[i_wall] if i_wall >= 0 else ""
        walltime = row.seconds("walltime", wall_raw, positive=True) if wall_raw else math.inf
        tenant = row.tenant(get[i_ten])
        cpu = row.cached("cpu", get[i_cpu], row._cpu, parse_cpu)
        memory = row.cached("memory", get[i_mem], row._memory, parse_memory)
        gpus = row.count("gpus", get[i_gpu] if i_gpu >= 0 else "", 0, 0)
        tasks = row.count("tasks", get[i_tasks] if i_tasks >= 0 else "", 1, 1)
        priority, preemptible = row.priority(get[i_prio] if i_prio >= 0 else "")
        job_id = (get[i_id] if i_id >= 0 else "") or str(len(jobs) + 1)
        if job_id in seen:
            raise row.error("id", f"job id {job_id!r} is used twice")
        seen.add(job_id)
        pool = (get[i_pool] if i_pool >= 0 else "") or None
        per_task = Resources(cpu, memory, gpus)
        job = TraceJob(
            job_id, submit, duration, walltime, tenant, per_task, tasks, priority, pool, row.line,
            preemptible,
            row.seconds("checkpoint_interval", interval_raw, positive=False)
            if interval_raw else None,
            row.seconds("restart_overhead", overhead_raw, positive=False)
            if overhead_raw else None,
        )  # fmt: skip
        jobs.append(job)
    jobs.sort(key=lambda j: j.submit)  # stable: ties keep file order
    return jobs


def _public_layout(header: Sequence[str]) -> tuple[str, str] | None:
    """``(what, --format)`` of the public layout (``sim.formats``) a first row looks like."""
    names = {h.strip().lower() for h in header}
    if ",".join(header).lstrip().startswith(("[", "{")) or {"jobid", "vc"} <= names:
        return "Philly's job log", "philly"
    headerless_pai = len(header) in (10, 11) and header[3].strip().lower() in PAI_STATES
    if "job_name" in names or "plan_gpu" in names or headerless_pai:
        return "Alibaba PAI's task table", "pai"
    return None


def _memory(n_bytes: int) -> str:
    text = format_memory(n_bytes)
    return text if parse_memory(text) == n_bytes else str(n_bytes)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def write_trace(
    jobs: Sequence[TraceJob],
    out: TextIO,
    priorities: Mapping[str, PriorityClass] = DEFAULT_PRIORITIES,
) -> None:
    """Write ``jobs`` as a trace CSV that ``parse_trace`` reads back into equal jobs
    (``line`` aside)."""
    names = {c.value: c.name for c in priorities.values()}
    writer = csv.writer(out, lineterminator="\n")
    # The checkpoint columns only when a job has its own (a trace without them stays as is).
    costs = any(j.checkpoint_interval is not None or j.restart_overhead is not None for j in jobs)
    writer.writerow(["id", *COLUMNS[:9], "pool", *(CHECKPOINT_COLUMNS if costs else ())])
    for job in jobs:
        own = [job.checkpoint_interval, job.restart_overhead] if costs else []
        writer.writerow(
            [
                job.id,
                _number(job.submit),
                _number(job.duration),
                "" if math.isinf(job.walltime) else _number(job.walltime),
                job.tenant,
                format_cpu(job.per_task.cpu_milli),
                _memory(job.per_task.memory),
                job.per_task.gpu,
                job.tasks,
                names.get(job.priority, str(job.priority)),
                job.pool or "",
                *("" if v is None else _number(v) for v in own),
            ]
        )


def check_tenants(jobs: Sequence[TraceJob], tenants: Sequence[str], source: str) -> None:
    """A trace's tenants must be the cluster file's when it lists any: else a typo would
    silently get a tenant with no quota, outside every cohort."""
    if tenants:
        _check_known(
            jobs, "tenant", set(tenants), source, "add it there, or drop the tenants section"
        )


def check_pools(jobs: Sequence[TraceJob], pools: Sequence[str], source: str) -> None:
    """A job's pool must be one of the cluster file's: else a typo would replay as a job
    that never fits."""
    _check_known(jobs, "pool", set(pools), source, "or leave the cell empty: any pool")


def _check_known(
    jobs: Sequence[TraceJob], field: str, listed: set[str], source: str, advice: str
) -> None:
    for job in sorted(jobs, key=lambda j: j.line):
        value = getattr(job, field)
        if value is not None and value not in listed:
            where = f" line {job.line}" if job.line else ""
            raise InvalidRequest(
                f"{source}{where}: {field}: unknown {field} {value!r}; the cluster file "
                f"lists {', '.join(sorted(listed))} ({advice})",
                field=field,
            )
