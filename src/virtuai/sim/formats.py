"""Public GPU trace layouts, read into the simulator's jobs (``virtuai sim --format``).

``virtuai`` (default)
    Our own CSV (``virtuai.sim.trace``).
``philly``
    Microsoft's Philly job log (``msr-fiddle/philly-traces``), either as published
    (``cluster_job_log``: a JSON list of jobs, each with ``jobid, vc, user, status,
    submitted_time`` and ``attempts`` whose ``detail`` lists the GPUs of each server)
    or flattened to a CSV of one row per job, as trace-replay tools do, with a header
    naming at least ``jobid, vc, submitted_time, start_time, end_time, num_gpus``
    (``user`` and ``status`` optional).  The file's first character tells which.
    The tenant is the virtual cluster (``vc``).  The run time is what the job held
    its GPUs: in the JSON the sum of its attempts' runs (a retried job held them
    for each), in the CSV ``end_time - start_time``.  The GPU count is the first
    attempt's.  Submission times are made relative to the first.  A job of more
    than 8 GPUs (one Philly server) is a gang of equal tasks on ``ceil(gpus / 8)``
    servers, each task's GPUs rounded up (12 GPUs: 2 tasks of 6); each GPU comes
    with ``--cpu-per-gpu`` CPUs (4) and ``--memory-per-gpu`` memory (32Gi), Philly
    recording neither.  Jobs whose status is not ``Pass``/``Failed``/``Killed``,
    jobs still running when the log was cut (a last attempt without an end) and
    jobs that never started are skipped.
``pai``
    Alibaba PAI (``cluster-trace-gpu-v2020``), in either of two layouts:

    - ``pai_task_table.csv``: ``job_name, task_name, inst_num, status, start_time,
      end_time, plan_cpu, plan_mem, plan_gpu, gpu_type`` with or without that
      header (the published file has none).  One task row is one job of
      ``inst_num`` tasks, each ``plan_cpu / 100`` CPUs, ``plan_mem`` GB and
      ``ceil(plan_gpu / 100)`` GPUs (PAI shares GPUs fractionally; we do not), for
      ``end_time - start_time``.  The tenant is the job's ``user`` and its
      submission the job's ``start_time`` (its submission: the task table has only
      launch times) from ``pai_job_table.csv`` when that file is beside the task
      table; else an extra ``user`` column on the row, else tenant ``pai``, and
      submitted at the task's launch.  Rows not ``Terminated`` or ``Failed``, or
      without times, are skipped.
    - The job list of Alibaba's own simulator (``simulator/traces/pai/
      pai_job_duration_estimate_100K.csv``): a header naming at least
      ``submit_time, duration, num_gpu``; ``num_cpu``, ``num_inst``, ``user`` (the
      tenant, else ``pai``) and ``job_id`` or ``job_name`` are read when there.  As
      that simulator does, a job is a gang of ``num_inst`` instances, each of
      ``num_gpu`` GPUs (fractional there, rounded up here) and ``num_cpu`` CPUs;
      memory is ``--memory-per-gpu`` a GPU (one GPU's worth for a CPU-only
      instance), the list recording none.

Errors name the file, the line (for JSON: the job's place in the list) and the field,
as for our own format.  Jobs skipped as above are counted by reason (``read_any``'s
``left_out``), which ``virtuai sim`` prints.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import validate_name
from virtuai.errors import InvalidRequest
from virtuai.sim.cluster import DEFAULT_PRIORITIES
from virtuai.sim.textfile import CsvRows, unreadable
from virtuai.sim.trace import TraceJob, read_trace

__all__ = ["TraceFormat", "read_any"]

Gi = 2**30
SERVER_GPUS = 8  # a Philly server's GPUs: bigger jobs were gangs of servers
PHILLY_REQUIRED = ("jobid", "vc", "submitted_time", "start_time", "end_time", "num_gpus")
PHILLY_DONE = frozenset({"pass", "failed", "killed"})
# Why a job of a public trace is not replayed (the keys of ``read_any``'s ``left_out``).
PHILLY_NOT_DONE = "jobs whose status is not Pass, Failed or Killed"
PAI_NOT_DONE = "tasks whose status is not Terminated or Failed"
NO_TIMES = "jobs that never started, or still ran when the log was cut"
PAI_COLUMNS = (
    "job_name", "task_name", "inst_num", "status", "start_time", "end_time", "plan_cpu",
    "plan_mem", "plan_gpu", "gpu_type",
)  # fmt: skip
PAI_JOB_COLUMNS = ("job_name", "inst_id", "user", "status", "start_time", "end_time")
PAI_JOB_TABLE = "pai_job_table.csv"
PAI_SIM_REQUIRED = ("submit_time", "duration", "num_gpu")
PAI_DONE = frozenset({"terminated", "failed"})
# Bounds of a cell, far beyond any real trace, so that a typo such as 1e300 is an error
# rather than an overflow in the metrics: a Unix time before the year 10000, and any
# other number (CPUs, memory, GPUs, instances, a duration in seconds).
MAX_UNIX_TIME = 253_402_300_800
MAX_NUMBER = 10**12


class TraceFormat(enum.StrEnum):
    VIRTUAI = "virtuai"
    PHILLY = "philly"
    PAI = "pai"


def read_any(
    path: Path,
    fmt: TraceFormat,
    priorities: object = DEFAULT_PRIORITIES,
    *,
    cpu_per_gpu: int = 4000,
    memory_per_gpu: int = 32 * Gi,
    left_out: Counter[str] | None = None,
) -> list[TraceJob]:
    """The jobs of the trace at ``path`` in layout ``fmt``, in submission order.

    The public layouts list jobs that cannot be replayed (never started, still running
    when the log was cut, not finished); each one skipped is counted in ``left_out``
    under its reason, so that the user learns how much of the file was replayed.
    """
    if fmt is TraceFormat.VIRTUAI:
        return read_trace(path, priorities)  # type: ignore[arg-type]
    skipped: Counter[str] = Counter() if left_out is None else left_out
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            if fmt is TraceFormat.PHILLY and _first_character(handle) in ("[", "{"):
                jobs = _philly_log(handle, path.name, cpu_per_gpu, memory_per_gpu, skipped)
            elif fmt is TraceFormat.PHILLY:
                jobs = _philly(handle, path.name, cpu_per_gpu, memory_per_gpu, skipped)
            else:
                jobs = _pai(handle, path, memory_per_gpu, skipped)
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, path.name, exc) from None
    return _relative(jobs)


def _first_character(handle: IO[str]) -> str:
    """The first character that is not white space (the handle is left at the start)."""
    head = handle.read(4096).lstrip()
    handle.seek(0)
    return head[:1]


def _error(where: str, column: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {column}: {message}", field=column)


def _time(where: str, column: str, raw: object) -> float | None:
    raw = "" if raw is None else str(raw).strip()
    if not raw or raw.lower() in ("none", "null", "nan"):
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise _error(
                where, column, f"expected Unix seconds or a date and time, not {raw!r}"
            ) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        return None
    if abs(value) > MAX_UNIX_TIME:
        raise _error(where, column, f"expected Unix seconds before the year 10000, not {raw!r}")
    return value


def _number(where: str, column: str, raw: object, default: float = 0.0) -> float:
    """A number >= 0; ``default`` for an empty cell (and PAI's and pandas' ``nan``)."""
    raw = "" if raw is None else str(raw).strip()
    if not raw or raw.lower() == "nan":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _error(where, column, f"expected a number, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _error(where, column, f"expected a number >= 0, not {raw!r}")
    if value > MAX_NUMBER:
        raise _error(where, column, f"expected a number at most {MAX_NUMBER:,}, not {raw!r}")
    return value


def _required(where: str, column: str, raw: object) -> float:
    value = _number(where, column, raw, default=math.nan)
    if math.isnan(value):
        raise _error(where, column, "missing")
    return value


def _tenant(where: str, column: str, raw: object) -> str:
    name = str(raw).strip().lower().replace("_", "-")
    try:
        return validate_name(name, field=column)
    except InvalidRequest as exc:
        raise _error(where, column, exc.message.removeprefix(f"{column} ")) from None


def _gang(gpus: int, cpu: int, memory: int) -> tuple[int, Resources]:
    """``(tasks, per task)`` of a job of ``gpus`` GPUs: one task up to a server's 8 GPUs,
    else equal tasks on ``ceil(gpus / 8)`` servers with their GPUs rounded up; ``cpu``
    and ``memory`` per GPU (one GPU's worth for a CPU-only job)."""
    tasks = math.ceil(gpus / SERVER_GPUS) if gpus > SERVER_GPUS else 1
    per = math.ceil(gpus / tasks)
    return tasks, Resources(max(1, per) * cpu, max(1, per) * memory, per)


def _philly(
    handle: Iterable[str], source: str, cpu: int, memory: int, skipped: Counter[str]
) -> list[TraceJob]:
    reader = CsvRows(handle, source)
    names = [n.strip().lower() for n in next(reader, [])]
    missing = [c for c in PHILLY_REQUIRED if c not in names]
    if missing:
        raise InvalidRequest(
            f"{source} line 1: missing column {missing[0]!r} for --format philly "
            f"(needs {', '.join(PHILLY_REQUIRED)}; or give Philly's cluster_job_log as "
            "published, in JSON)",
            field=missing[0],
        )
    jobs: list[TraceJob] = []
    for cells in reader:
        if not cells:
            continue
        line = reader.line_num
        where = f"{source} line {line}"
        if len(cells) > len(names):
            raise InvalidRequest(
                f"{where}: {len(cells)} cells but the header names {len(names)}", field=None
            )
        row = dict(zip(names, cells, strict=False))  # short rows: the rest missing
        status = (row.get("status") or "pass").strip().lower()
        start = _time(where, "start_time", row.get("start_time"))
        end = _time(where, "end_time", row.get("end_time"))
        submit = _time(where, "submitted_time", row.get("submitted_time"))
        if status not in PHILLY_DONE:
            skipped[PHILLY_NOT_DONE] += 1
            continue
        if start is None or end is None or submit is None:
            skipped[NO_TIMES] += 1
            continue
        gpus = int(_required(where, "num_gpus", row.get("num_gpus")))
        tasks, per_task = _gang(gpus, cpu, memory)
        jobs.append(
            TraceJob(
                id=(row.get("jobid") or "").strip() or str(len(jobs) + 1),
                submit=submit,
                duration=max(0.0, end - start),
                walltime=math.inf,
                tenant=_tenant(where, "vc", row.get("vc") or ""),
                per_task=per_task,
                tasks=tasks,
                line=line,
            )
        )
    return jobs


def _philly_log(
    handle: IO[str], source: str, cpu: int, memory: int, skipped: Counter[str]
) -> list[TraceJob]:
    """Philly's ``cluster_job_log`` as published: a JSON list of jobs."""
    try:
        entries = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{source} line {exc.lineno} column {exc.colno}: not JSON: {exc.msg}"
        ) from None
    except RecursionError:  # lists or objects nested thousands deep
        raise InvalidRequest(f"{source}: not JSON that can be read: nested too deeply") from None
    if not isinstance(entries, list):
        raise InvalidRequest(f"{source}: expected a JSON list of jobs (Philly's cluster_job_log)")
    jobs: list[TraceJob] = []
    for place, entry in enumerate(entries, start=1):
        where = f"{source} job {place}"
        if not isinstance(entry, Mapping):
            raise InvalidRequest(f"{where}: expected a JSON object, not {type(entry).__name__}")
        attempts = _attempts(where, entry.get("attempts"))
        submit = _time(where, "submitted_time", entry.get("submitted_time"))
        status = str(entry.get("status") or "").strip().lower()
        runs = [(start, end) for start, end, _ in attempts]
        if status not in PHILLY_DONE:
            skipped[PHILLY_NOT_DONE] += 1
            continue
        if submit is None or not runs or None in runs[-1]:
            skipped[NO_TIMES] += 1  # never ran, or still running when the log was cut
            continue
        gpus = attempts[0][2]
        tasks, per_task = _gang(gpus, cpu, memory)
        held = sum(max(0.0, end - start) for start, end in runs if start is not None and end)
        jobs.append(
            TraceJob(
                id=str(entry.get("jobid") or "").strip() or str(place),
                submit=submit,
                duration=held,
                walltime=math.inf,
                tenant=_tenant(where, "vc", entry.get("vc") or ""),
                per_task=per_task,
                tasks=tasks,
                line=place,
            )
        )
    return jobs


def _attempts(where: str, raw: object) -> list[tuple[float | None, float | None, int]]:
    """``(start, end, GPUs)`` of each attempt; ``[]`` if the job never ran."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _error(where, "attempts", f"expected a list, not {type(raw).__name__}")
    out = []
    for attempt in raw:
        if not isinstance(attempt, Mapping):
            raise _error(where, "attempts", f"expected objects, not {type(attempt).__name__}")
        detail = attempt.get("detail") or []
        if not isinstance(detail, list) or not all(
            isinstance(d, Mapping) and isinstance(d.get("gpus") or [], list) for d in detail
        ):
            raise _error(where, "detail", "expected a list of {ip, gpus: [...]} objects")
        gpus = sum(len(d.get("gpus") or []) for d in detail)
        start = _time(where, "start_time", attempt.get("start_time"))
        end = _time(where, "end_time", attempt.get("end_time"))
        out.append((start, end, gpus))
    return out


def _pai(handle: IO[str], path: Path, memory_per_gpu: int, skipped: Counter[str]) -> list[TraceJob]:
    source = path.name
    reader = CsvRows(handle, source)
    header = next(reader, None)
    names = [c.strip().lower() for c in header or []]
    if all(c in names for c in PAI_SIM_REQUIRED):
        return _pai_job_list(reader, names, source, memory_per_gpu)
    jobs: list[TraceJob] = []
    columns: list[str] = list(PAI_COLUMNS)
    named: set[int] = set()  # jobs whose row names its user
    rows: Iterable[list[str]] = reader
    if header is not None and names[:1] != ["job_name"]:
        rows = itertools.chain([header], reader)  # the published file has no header
    elif header is not None:
        columns = names
    for cells in rows:
        line = reader.line_num
        where = f"{source} line {line}"
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns) + 1:
            raise InvalidRequest(
                f"{where}: {len(cells)} cells; --format pai has "
                f"{len(PAI_COLUMNS)} (plus an optional user)",
                field=None,
            )
        row = dict(zip([*columns, "user"], cells, strict=False))
        if (row.get("status") or "").strip().lower() not in PAI_DONE:
            skipped[PAI_NOT_DONE] += 1
            continue
        start = _time(where, "start_time", row.get("start_time"))
        end = _time(where, "end_time", row.get("end_time"))
        if start is None or end is None:
            skipped[NO_TIMES] += 1
            continue
        cpu = _number(where, "plan_cpu", row.get("plan_cpu"))
        mem = _number(where, "plan_mem", row.get("plan_mem"))
        gpu = _number(where, "plan_gpu", row.get("plan_gpu"))
        tasks = max(1, int(_number(where, "inst_num", row.get("inst_num"), default=1)))
        user = (row.get("user") or "").strip()
        if user:
            named.add(len(jobs))
        jobs.append(
            TraceJob(
                id=f"{row.get('job_name', '').strip()}/{row.get('task_name', '').strip()}",
                submit=start,
                duration=max(0.0, end - start),
                walltime=math.inf,
                tenant=_tenant(where, "user", user) if user else "pai",
                per_task=Resources(
                    max(1, round(cpu * 10)), max(1, round(mem * Gi)), math.ceil(gpu / 100)
                ),
                tasks=tasks,
                line=line,
            )
        )
    table = path.with_name(PAI_JOB_TABLE)
    if len(named) < len(jobs) and table != path and table.is_file():
        jobs = _join_pai_jobs(jobs, named, table)
    return jobs


def _join_pai_jobs(jobs: list[TraceJob], named: set[int], table: Path) -> list[TraceJob]:
    """Each task's tenant (the job's ``user``) and submission (the job's ``start_time``)
    from ``pai_job_table.csv``; a task whose row named its user keeps it."""
    wanted = {job.id.split("/", 1)[0] for k, job in enumerate(jobs) if k not in named}
    found: dict[str, tuple[str, float | None]] = {}
    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            reader = CsvRows(handle, table.name)
            for cells in reader:
                if not cells or cells[0] not in wanted:
                    continue  # also the header, if the file has one
                where = f"{table.name} line {reader.line_num}"
                row = dict(zip(PAI_JOB_COLUMNS, cells, strict=False))
                user = (row.get("user") or "").strip()
                tenant = _tenant(where, "user", user) if user else "pai"
                found[cells[0]] = (tenant, _time(where, "start_time", row.get("start_time")))
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(table, table.name, exc) from None
    out = []
    for k, job in enumerate(jobs):
        known = None if k in named else found.get(job.id.split("/", 1)[0])
        if known is None:
            out.append(job)
            continue
        tenant, submitted = known
        submit = job.submit if submitted is None else min(job.submit, submitted)
        out.append(replace(job, tenant=tenant, submit=submit))
    return out


def _pai_job_list(
    reader: CsvRows, names: list[str], source: str, memory_per_gpu: int
) -> list[TraceJob]:
    """The job list of Alibaba's PAI simulator: one job a row, GPUs and CPUs per instance."""
    jobs: list[TraceJob] = []
    for cells in reader:
        line = reader.line_num
        where = f"{source} line {line}"
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(names):
            raise InvalidRequest(
                f"{where}: {len(cells)} cells but the header names {len(names)}", field=None
            )
        row = dict(zip(names, cells, strict=False))
        submit = _time(where, "submit_time", row.get("submit_time"))
        if submit is None:
            raise _error(where, "submit_time", "missing")
        duration = _required(where, "duration", row.get("duration"))
        gpus = math.ceil(_number(where, "num_gpu", row.get("num_gpu")))
        cpus = _number(where, "num_cpu", row.get("num_cpu"))
        tasks = max(1, int(_number(where, "num_inst", row.get("num_inst"), default=1)))
        per_task = Resources(max(1, math.ceil(cpus * 1000)), max(1, gpus) * memory_per_gpu, gpus)
        user = (row.get("user") or "").strip()
        job_id = (row.get("job_id") or row.get("job_name") or "").strip() or str(line - 1)
        jobs.append(
            TraceJob(
                id=job_id,
                submit=submit,
                duration=duration,
                walltime=math.inf,
                tenant=_tenant(where, "user", user) if user else "pai",
                per_task=per_task,
                tasks=tasks,
                line=line,
            )
        )
    return jobs


def _relative(jobs: list[TraceJob]) -> list[TraceJob]:
    """Submission times from the first one, in submission order; ids made unique."""
    if not jobs:
        return jobs
    first = min(j.submit for j in jobs)
    seen: dict[str, int] = {}
    out = []
    for job in sorted(jobs, key=lambda j: j.submit):
        n = seen[job.id] = seen.get(job.id, 0) + 1
        job_id = job.id if n == 1 else f"{job.id}#{n}"
        out.append(replace(job, id=job_id, submit=job.submit - first))
    return out
