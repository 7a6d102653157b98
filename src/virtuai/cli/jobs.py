"""``virtuai jobs``, ``job``, ``cancel``, ``wait`` and ``logs``."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject, ServerUnreachableError
from virtuai.cli.clock import Clock, clock_of
from virtuai.cli.output import JsonFlag
from virtuai.domain.workload import FINISHED_STATES, JobState

JOBS = "/api/v1/jobs"
FINISHED = frozenset(state.value for state in FINISHED_STATES)
POLL_S = 0.5
WAIT_MAX_POLL_S = 2.0
JOB_CHECK_EVERY = 10  # `logs -f`: look at the job every this many idle polls
OUTAGE_GRACE_S = 60.0  # `wait` rides out a server restart this long
TIMEOUT_EXIT = 124  # as timeout(1)
REASON_WIDTH = 40

JobId = Annotated[str, typer.Argument(help="Job id, or ARRAY_INDEX for an array element (12_3).")]
ARRAYS = "/api/v1/arrays"


def register(app: typer.Typer, panel: str) -> None:
    app.command("jobs", rich_help_panel=panel)(list_jobs)
    app.command("job", rich_help_panel=panel)(show_job)
    app.command("cancel", rich_help_panel=panel)(cancel)
    app.command("wait", rich_help_panel=panel)(wait)
    app.command("logs", rich_help_panel=panel)(logs)


def list_jobs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs.")] = None,
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many jobs.", min=1)] = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    params = {"tenant": tenant, "state": state.value if state else None, "limit": limit}
    with Client.from_environment() as client:
        jobs = client.get_list(JOBS, params)
    if as_json:
        output.print_json(jobs)
        return
    headers = ["ID", "NAME", "TENANT", "USER", "STATE", "TASKS", "CPU", "MEM", "GPU"]
    headers += ["TIME LIMIT", "ELAPSED", "REASON"]
    output.print_table(headers, [_job_row(job) for job in jobs])


def show_job(job_id: JobId, as_json: JsonFlag = False) -> None:
    """One job in detail: state, reason, placement, times and its history."""
    with Client.from_environment() as client:
        job = client.get_object(f"{JOBS}/{resolve(client, job_id)}")
    if as_json:
        output.print_json(job)
    else:
        print_job(job)


def cancel(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Cancel a job: pending ones at once, running ones are stopped.

    An array's id cancels every element, as `scancel` does; ARRAY_INDEX one element.
    """
    with Client.from_environment() as client:
        ident = resolve(client, job_id)
        if "_" not in job_id and _is_array(client.get_object(f"{JOBS}/{ident}")):
            elements = client.post_list(f"{ARRAYS}/{ident}/cancel")
            if as_json:
                output.print_json(elements)
            else:
                typer.echo(f"array {ident}: cancel requested for {len(elements)} element(s)")
            return
        job = client.post_object(f"{JOBS}/{ident}/cancel")
    if as_json:
        output.print_json(job)
        return
    if job.get("state") in FINISHED:
        typer.echo(f"job {job_id} {_ended(job)}")
    else:  # running tasks are being stopped; `virtuai wait` sees them end
        typer.echo(f"job {job_id}: cancel requested (state: {job.get('state')})")


def wait(
    ctx: typer.Context,
    job_id: JobId,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 124).", min=0)
    ] = None,
) -> None:
    """Wait for a job to end; exit 0 only if it succeeded."""
    with Client.from_environment() as client:
        job = _until_finished(client, resolve(client, job_id), clock_of(ctx), timeout)
    if job.get("state") != JobState.SUCCEEDED:
        output.echo_err(f"job {job_id} {_ended(job)}")
        raise typer.Exit(1)


def _until_finished(client: Client, job_id: int, clock: Clock, timeout: float | None) -> JsonObject:
    """Poll the job until it has ended, backing off to WAIT_MAX_POLL_S; exit 124 at timeout."""
    deadline = None if timeout is None else clock.monotonic() + timeout
    interval = POLL_S
    job: JsonObject | None = None
    outage_since: float | None = None
    while True:
        try:
            job = client.get_object(f"{JOBS}/{job_id}")
            outage_since = None
            if job.get("state") in FINISHED:
                return job
        except ServerUnreachableError:
            # Ride out a restart of the server (jobs outlive it), not a wrong URL.
            now = clock.monotonic()
            if job is None or (outage_since is not None and now - outage_since > OUTAGE_GRACE_S):
                raise
            if outage_since is None:
                output.echo_err("warning: the server is not answering; still waiting")
                outage_since = now
        now = clock.monotonic()
        if deadline is not None and now >= deadline:
            state = job.get("state") if job else "unknown"
            output.echo_err(
                f"error: gave up after {timeout:g} s waiting for job {job_id} (state: {state})"
            )
            raise typer.Exit(TIMEOUT_EXIT)
        clock.sleep(interval if deadline is None else min(interval, deadline - now))
        interval = min(interval * 2, WAIT_MAX_POLL_S)


def logs(
    ctx: typer.Context,
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the task ends.")
    ] = False,
    task: Annotated[int, typer.Option(help="Task index (0 .. tasks-1).", min=0)] = 0,
) -> None:
    """Print a task's output: its stdout to stdout and its stderr to stderr."""
    clock = clock_of(ctx)
    offsets = {"stdout": 0, "stderr": 0}
    ended: set[str] = set()
    idle_polls = 0
    job_finished = False
    with Client.from_environment() as client:
        job_id = str(resolve(client, job_id))
        while True:
            printed = False
            for stream in [s for s in offsets if s not in ended]:
                chunk = client.get_object(
                    f"{JOBS}/{job_id}/logs",
                    {"task": task, "stream": stream, "offset": offsets[stream]},
                )
                data = str(chunk.get("data") or "")
                if data:
                    typer.echo(data, nl=False, err=stream == "stderr")
                    printed = True
                offsets[stream] = int(chunk.get("offset", offsets[stream] + len(data)))
                if chunk.get("eof"):
                    ended.add(stream)
            if len(ended) == len(offsets) or (not printed and (not follow or job_finished)):
                return
            if printed:
                continue
            idle_polls += 1
            if idle_polls % JOB_CHECK_EVERY == 0:
                # A task that never started never reaches end-of-file: stop once the job
                # has ended and one more pass brought nothing.
                job = client.get_object(f"{JOBS}/{job_id}")
                job_finished = job.get("state") in FINISHED
            clock.sleep(POLL_S)


# Formatting --------------------------------------------------------------------


def _job_row(job: JsonObject) -> list[str]:
    res = job.get("resources") or {}
    return [
        display_id(job),
        str(job.get("name", "")),
        str(job.get("tenant", "")),
        str(job.get("user", "")),
        str(job.get("state", "")),
        str(job.get("tasks", "")),
        output.cpu(res.get("cpu")),
        output.memory(res.get("memory")),
        output.count(res.get("gpu")),
        output.duration(job.get("time_limit")),
        output.elapsed(job.get("started_at"), job.get("finished_at")),
        output.truncate(str(job.get("reason") or ""), REASON_WIDTH) or output.NONE,
    ]


def print_job(job: JsonObject) -> None:
    """A readable block, in the spirit of ``scontrol show job``."""
    res = job.get("resources") or {}
    env = job.get("env") or {}
    output.print_fields(
        [
            ("Job", str(job.get("id", ""))),
            ("Name", str(job.get("name", ""))),
            ("Tenant", str(job.get("tenant", ""))),
            ("User", str(job.get("user", ""))),
            ("State", str(job.get("state", ""))),
            ("Reason", str(job.get("reason") or output.NONE)),
            ("Exit code", output.count(job.get("exit_code"))),
            ("Priority", str(job.get("priority", ""))),
            ("Queue position", output.count(job.get("queue_position"))),
            ("Expected start", output.timestamp(job.get("expected_start"))),
            ("Restarts", output.count(job.get("restart_count"))),
            ("Tasks", str(job.get("tasks", ""))),
            (
                "Per task",
                f"cpu={output.cpu(res.get('cpu'))} memory={output.memory(res.get('memory'))} "
                f"gpu={output.count(res.get('gpu'))}",
            ),
            ("Time limit", output.duration(job.get("time_limit"))),
            ("Elapsed", output.elapsed(job.get("started_at"), job.get("finished_at"))),
            ("Submitted", output.timestamp(job.get("submitted_at"))),
            ("Started", output.timestamp(job.get("started_at"))),
            ("Finished", output.timestamp(job.get("finished_at"))),
            ("Command", shlex.join(str(part) for part in job.get("command") or [])),
            ("Workdir", str(job.get("workdir") or output.NONE)),
            # Values may be secrets: names only here, everything with --json.
            ("Env", ", ".join(sorted(env)) or output.NONE),
            *_where_fields(job),
        ]
    )
    _section(
        "Placement",
        ["TASK", "NODE", "GPUS"],
        [
            [
                str(p.get("index", "")),
                str(p.get("node", "")),
                ",".join(str(i) for i in p.get("gpu_indices") or []) or output.NONE,
            ]
            for p in job.get("placement") or []
        ],
    )
    _section(
        "Task runs",
        ["ATTEMPT", "TASK", "NODE", "OUTCOME", "EXIT", "STARTED", "FINISHED", "MESSAGE"],
        [
            [
                str(t.get("attempt", "")),
                str(t.get("index", "")),
                str(t.get("node", "")),
                str(t.get("outcome") or output.NONE),
                output.count(t.get("exit_code")),
                output.timestamp(t.get("started_at")),
                output.timestamp(t.get("finished_at")),
                output.truncate(str(t.get("message") or ""), 60),
            ]
            for t in job.get("task_runs") or []
        ],
    )
    _section(
        "Events",
        ["AT", "FROM", "TO", "BY", "REASON"],
        [
            [
                output.timestamp(e.get("at")),
                str(e.get("from_state") or output.NONE),
                str(e.get("to_state", "")),
                str(e.get("actor", "")),
                str(e.get("reason", "")),
            ]
            for e in job.get("events") or []
        ],
    )


def _section(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        return
    typer.echo(f"\n{title}:")
    output.print_table(headers, rows)


def _ended(job: JsonObject) -> str:
    """``failed with exit code 3: task 0 exited with 3``."""
    text = str(job.get("state"))
    if job.get("exit_code") is not None:
        text += f" with exit code {job['exit_code']}"
    if job.get("reason"):
        text += f": {job['reason']}"
    return text


def resolve(client: Client, text: str) -> int:
    """``12`` -> 12; ``12_3`` -> the id of element 3 of array 12."""
    head, sep, tail = text.partition("_")
    if not (head.isascii() and head.isdigit()) or (sep and not (tail.isascii() and tail.isdigit())):
        raise typer.BadParameter(f"{text!r} is not a job id (12) or an array element (12_3)")
    if not sep:
        return int(head)
    for element in client.get_list(JOBS, {"array_id": int(head), "limit": 10_000}):
        if element.get("array_index") == int(tail):
            return int(element["id"])
    raise typer.BadParameter(f"array {head} has no element {tail}")


def display_id(job: JsonObject) -> str:
    """Array elements show as ARRAY_INDEX, as in squeue."""
    if job.get("array_id") is not None and job.get("array_index") is not None:
        return f"{job['array_id']}_{job['array_index']}"
    return str(job.get("id", ""))


def _is_array(job: JsonObject) -> bool:
    return job.get("array_id") is not None and job.get("array_id") == job.get("id")


def _where_fields(job: JsonObject) -> list[tuple[str, str]]:
    """Its site and dataset, for jobs that have them."""
    fields = []
    if job.get("site"):
        fields.append(("Site", str(job["site"])))
    if job.get("data"):
        copied = " (copied where it runs)" if job.get("stage") else ""
        fields.append(("Data", f"{job['data']}{copied}"))
    return fields
