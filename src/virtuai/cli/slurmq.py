"""``virtuai squeue`` and ``virtuai sacct``: Slurm's views of the queue and of past jobs.

Both read ``GET /api/v1/jobs`` (and ``/nodes`` for each node's pool) and print
with Slurm's columns, state letters and formats (``virtuai.slurmfront.report``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from virtuai.cli.client import Client, JsonObject
from virtuai.slurmfront import report

JOBS = "/api/v1/jobs"
SLURM_CONTEXT = {"help_option_names": ["--help"]}
LIST_LIMIT = 10_000
Users = Annotated[
    str | None, typer.Option("--user", "-u", help="Only these users' jobs (comma list).")
]
Jobs = Annotated[
    str | None, typer.Option("--jobs", "-j", help="Only these jobs: 12, 12_3 or array ids.")
]
NoHeader = Annotated[bool, typer.Option("--noheader", "-h", help="No header line.")]
SacctNoHeader = Annotated[bool, typer.Option("--noheader", "-n", help="No header lines.")]


def register(app: typer.Typer, panel: str) -> None:
    app.command("squeue", context_settings=SLURM_CONTEXT, rich_help_panel=panel)(squeue)
    app.command("sacct", context_settings=SLURM_CONTEXT, rich_help_panel=panel)(sacct)


def squeue(
    user: Users = None,
    states: Annotated[
        str | None,
        typer.Option("--states", "-t", help="PD,R,CG,CD,F,TO,CA,PR or names, or all."),
    ] = None,
    jobs: Jobs = None,
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="Only jobs on these pools.")
    ] = None,
    me: Annotated[bool, typer.Option("--me", help="Only your own jobs.")] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", "-o", help=f"Slurm format ({report.SQUEUE_DEFAULT}).")
    ] = None,
    noheader: NoHeader = False,
    all_partitions: Annotated[
        bool, typer.Option("--all", "-a", help="Accepted (no effect).")
    ] = False,
) -> None:
    """Pending and running jobs, as Slurm's squeue shows them."""
    wanted = parse_states(states, "--states") if states else report.ACTIVE
    with Client.from_environment() as client:
        rows, view = _jobs(client)
        users = _users(client, user, me)
    rows = [
        r
        for r in rows
        if r.get("state") in wanted
        and (users is None or r.get("user") in users)
        and job_matches(r, jobs)
        and (partition is None or view.partition(r) in partition.split(","))
    ]
    rows.sort(key=lambda r: (r.get("state") != "running", int(r.get("id", 0))))
    try:
        lines = report.squeue_lines(rows, view, fmt or report.SQUEUE_DEFAULT, not noheader)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--format") from None
    for line in lines:
        typer.echo(line)


def sacct(
    jobs: Jobs = None,
    starttime: Annotated[
        str | None,
        typer.Option("--starttime", "-S", help="Jobs ended after this (default: midnight)."),
    ] = None,
    endtime: Annotated[
        str | None, typer.Option("--endtime", "-E", help="Jobs submitted before this.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-o", help=f"Fields, e.g. {report.SACCT_DEFAULT}."),
    ] = None,
    allocations: Annotated[
        bool, typer.Option("--allocations", "-X", help="Only jobs, not their .batch steps.")
    ] = False,
    user: Users = None,
    states: Annotated[
        str | None, typer.Option("--state", "-s", help="Only these states (CD,F,...).")
    ] = None,
    noheader: SacctNoHeader = False,
) -> None:
    """Past and present jobs, as Slurm's sacct shows them."""
    start: dt.datetime | None = _when(starttime, "--starttime") if starttime else _midnight()
    end = _when(endtime, "--endtime") if endtime else None
    wanted = parse_states(states, "--state") if states else None
    with Client.from_environment() as client:
        rows, view = _jobs(client)
        users = _users(client, user, False)
    if jobs is not None and not starttime:
        start = None  # as Slurm: -j without -S looks at every time
    rows = [
        r
        for r in rows
        if job_matches(r, jobs)
        and (users is None or r.get("user") in users)
        and (wanted is None or r.get("state") in wanted)
        and _in_window(r, start, end)
    ]
    rows.sort(key=lambda r: int(r.get("id", 0)))
    try:
        lines = report.sacct_lines(
            rows, view, fmt or report.SACCT_DEFAULT, steps=not allocations, header=not noheader
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--format") from None
    for line in lines:
        typer.echo(line)


def _jobs(client: Client) -> tuple[list[JsonObject], report.View]:
    rows = client.get_list(JOBS, {"limit": LIST_LIMIT})
    pools = {str(n.get("name")): str(n.get("pool")) for n in client.get_list("/api/v1/nodes")}
    return rows, report.View(dt.datetime.now(dt.UTC), pools)


def _users(client: Client, user: str | None, me: bool) -> set[str] | None:
    names = set(user.split(",")) if user else set()
    if me:
        names.add(str(client.get_object("/api/v1/whoami").get("name")))
    return names or None


def parse_states(text: str, option: str) -> frozenset[str]:
    try:
        return report.virtuai_states(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def job_matches(row: JsonObject, jobs: str | None) -> bool:
    if jobs is None:
        return True
    wanted = {j.strip() for j in jobs.split(",") if j.strip()}
    ident = str(row.get("id"))
    return bool(wanted & {ident, report.job_id(row), str(row.get("array_id") or ident)})


def _midnight() -> dt.datetime:
    today = dt.datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    return today


def _when(text: str, option: str) -> dt.datetime:
    """Slurm's times: ``2026-05-01``, ``2026-05-01T10:00[:00]``, ``now``, ``now-2hours``."""
    raw = text.strip().lower()
    now = dt.datetime.now().astimezone()
    if raw.startswith("now"):
        delta = raw[3:]
        if not delta:
            return now
        units = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800, "": 1}
        sign = -1 if delta[0] == "-" else 1
        number = delta[1:].rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = delta[1 + len(number) :]
        unit = next((u for u in units if u and u.startswith(unit)), "") if unit else ""
        if number.isascii() and number.isdigit():
            return now + dt.timedelta(seconds=sign * int(number) * units[unit])
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"cannot read {text!r}; use YYYY-MM-DD[THH:MM[:SS]] or now[-N{{minutes,hours,days}}]",
            param_hint=option,
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def _in_window(row: JsonObject, start: dt.datetime | None, end: dt.datetime | None) -> bool:
    """Slurm's rule: a job counts if it was eligible in [start, end]."""
    submitted = report.parse_time(row.get("submitted_at"))
    finished = report.parse_time(row.get("finished_at"))
    if start is not None and finished is not None and finished < start:
        return False
    return not (end is not None and submitted is not None and submitted > end)
