"""Public GPU trace layouts, read into the simulator's jobs (``virtuai sim --format``).

``virtuai`` (default)
    Our own CSV (``virtuai.sim.trace``).
``philly``
    A flat CSV of Microsoft's Philly job log (``msr-fiddle/philly-traces``,
    ``cluster_job_log`` flattened one row per job, as trace-replay tools do), with
    a header naming at least ``jobid, vc, submitted_time, start_time, end_time,
    num_gpus``; ``user`` and ``status`` are optional.  The tenant is the virtual
    cluster (``vc``); the duration is ``end_time - start_time`` (its last
    attempt's run); submission times are made relative to the first.  A job of
    more than 8 GPUs is a gang of 8-GPU tasks (a multiple of 8 is required, as
    Philly allocates whole servers then); each GPU comes with ``--cpu-per-gpu``
    CPUs (4) and ``--memory-per-gpu`` memory (32Gi), Philly recording neither.
    Rows whose status is not ``Pass``/``Failed``/``Killed`` (jobs still running
    when the log was cut) and rows without a start or end are skipped.
``pai``
    Alibaba PAI's ``pai_task_table.csv`` (``cluster-trace-gpu-v2020``): ``job_name,
    task_name, inst_num, status, start_time, end_time, plan_cpu, plan_mem,
    plan_gpu, gpu_type`` with or without that header (the published file has
    none); an extra ``user`` column, joined from ``pai_job_table``, is the
    tenant (else every job is tenant ``pai``).  One task row is one job of
    ``inst_num`` tasks, each ``plan_cpu / 100`` CPUs, ``plan_mem`` GB and
    ``ceil(plan_gpu / 100)`` GPUs (PAI shares GPUs fractionally; we do not);
    submitted at ``start_time`` (the task table has no queueing time), for
    ``end_time - start_time``.  Rows not ``Terminated`` or ``Failed``, or
    without times, are skipped.

Errors name the file, the line and the column, as for our own format.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import math
from collections.abc import Iterable
from pathlib import Path

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import validate_name
from virtuai.errors import InvalidRequest
from virtuai.sim.cluster import DEFAULT_PRIORITIES
from virtuai.sim.trace import TraceJob, read_trace

__all__ = ["TraceFormat", "read_any"]

Gi = 2**30
PHILLY_REQUIRED = ("jobid", "vc", "submitted_time", "start_time", "end_time", "num_gpus")
PHILLY_DONE = frozenset({"pass", "failed", "killed"})
PAI_COLUMNS = (
    "job_name", "task_name", "inst_num", "status", "start_time", "end_time", "plan_cpu",
    "plan_mem", "plan_gpu", "gpu_type",
)  # fmt: skip
PAI_DONE = frozenset({"terminated", "failed"})


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
) -> list[TraceJob]:
    """The jobs of the trace at ``path`` in layout ``fmt``, in submission order."""
    if fmt is TraceFormat.VIRTUAI:
        return read_trace(path, priorities)  # type: ignore[arg-type]
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            if fmt is TraceFormat.PHILLY:
                jobs = _philly(handle, path.name, cpu_per_gpu, memory_per_gpu)
            else:
                jobs = _pai(handle, path.name)
    except OSError as exc:
        raise InvalidRequest(f"{path.name}: cannot read it: {exc.strerror or exc}") from None
    return _relative(jobs)


def _error(source: str, line: int, column: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{source} line {line}: {column}: {message}", field=column)


def _time(source: str, line: int, column: str, raw: str) -> float | None:
    raw = raw.strip()
    if not raw or raw.lower() in ("none", "null", "nan"):
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            stamp = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise _error(
                source, line, column, f"expected Unix seconds or a date and time, not {raw!r}"
            ) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    return value if math.isfinite(value) else None


def _number(source: str, line: int, column: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _error(source, line, column, f"expected a number, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _error(source, line, column, f"expected a number >= 0, not {raw!r}")
    return value


def _tenant(source: str, line: int, column: str, raw: str) -> str:
    name = raw.strip().lower().replace("_", "-")
    try:
        return validate_name(name, field=column)
    except InvalidRequest as exc:
        raise _error(source, line, column, exc.message.removeprefix(f"{column} ")) from None


def _philly(handle: Iterable[str], source: str, cpu: int, memory: int) -> list[TraceJob]:
    reader = csv.DictReader(handle, strict=True)
    names = [n.strip().lower() for n in reader.fieldnames or []]
    missing = [c for c in PHILLY_REQUIRED if c not in names]
    if missing:
        raise InvalidRequest(
            f"{source} line 1: missing column {missing[0]!r} for --format philly "
            f"(needs {', '.join(PHILLY_REQUIRED)})",
            field=missing[0],
        )
    reader.fieldnames = names
    jobs: list[TraceJob] = []
    for row in reader:
        line = reader.line_num
        status = (row.get("status") or "pass").strip().lower()
        start = _time(source, line, "start_time", row["start_time"] or "")
        end = _time(source, line, "end_time", row["end_time"] or "")
        submit = _time(source, line, "submitted_time", row["submitted_time"] or "")
        if status not in PHILLY_DONE or start is None or end is None or submit is None:
            continue
        gpus = int(_number(source, line, "num_gpus", row["num_gpus"] or ""))
        tasks, per = 1, gpus
        if gpus > 8:
            if gpus % 8:
                raise _error(source, line, "num_gpus", f"{gpus} GPUs is not whole 8-GPU servers")
            tasks, per = gpus // 8, 8
        per_task = Resources(max(1, per) * cpu, max(1, per) * memory, per)
        jobs.append(
            TraceJob(
                id=(row["jobid"] or "").strip() or str(len(jobs) + 1),
                submit=submit,
                duration=max(0.0, end - start),
                walltime=math.inf,
                tenant=_tenant(source, line, "vc", row["vc"] or ""),
                per_task=per_task,
                tasks=tasks,
                line=line,
            )
        )
    return jobs


def _pai(handle: Iterable[str], source: str) -> list[TraceJob]:
    reader = csv.reader(handle, strict=True)
    jobs: list[TraceJob] = []
    columns: list[str] = list(PAI_COLUMNS)
    for cells in reader:
        line = reader.line_num
        if line == 1 and cells and cells[0].strip().lower() == "job_name":
            columns = [c.strip().lower() for c in cells]
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns) + 1:
            raise InvalidRequest(
                f"{source} line {line}: {len(cells)} cells; --format pai has "
                f"{len(PAI_COLUMNS)} (plus an optional user)",
                field=None,
            )
        row = dict(zip([*columns, "user"], cells, strict=False))
        if (row.get("status") or "").strip().lower() not in PAI_DONE:
            continue
        start = _time(source, line, "start_time", row.get("start_time", ""))
        end = _time(source, line, "end_time", row.get("end_time", ""))
        if start is None or end is None:
            continue
        cpu = _number(source, line, "plan_cpu", row.get("plan_cpu") or "0")
        mem = _number(source, line, "plan_mem", row.get("plan_mem") or "0")
        gpu = _number(source, line, "plan_gpu", row.get("plan_gpu") or "0")
        tasks = max(1, int(_number(source, line, "inst_num", row.get("inst_num") or "1")))
        user = (row.get("user") or "").strip()
        jobs.append(
            TraceJob(
                id=f"{row.get('job_name', '').strip()}/{row.get('task_name', '').strip()}",
                submit=start,
                duration=max(0.0, end - start),
                walltime=math.inf,
                tenant=_tenant(source, line, "user", user) if user else "pai",
                per_task=Resources(
                    max(1, round(cpu * 10)), max(1, round(mem * Gi)), math.ceil(gpu / 100)
                ),
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
        out.append(
            TraceJob(
                job_id,
                job.submit - first,
                job.duration,
                job.walltime,
                job.tenant,
                job.per_task,
                job.tasks,
                job.priority,
                job.pool,
                job.line,
                job.preemptible,
            )
        )
    return out
