"""``virtuai usage``: accounting per tenant and user, then totals per tenant (table, CSV or
JSON); ``virtuai report --month``: a month per tenant, as Slurm's ``sreport`` gives it."""

from __future__ import annotations

import csv
import datetime as dt
import enum
import sys
from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag

USAGE = "/api/v1/usage"
AMOUNTS = ["JOBS", "TASKS", "CPU-HOURS", "GPU-HOURS", "MEM-GB-HOURS", "WALL-HOURS"]
CSV_AMOUNTS = ["jobs", "tasks", "cpu_hours", "gpu_hours", "memory_gb_hours", "wall_hours"]


class Format(enum.StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


FormatOption = Annotated[
    Format, typer.Option("--format", help="table, csv (one row per tenant and user) or json.")
]


def register(app: typer.Typer, panel: str) -> None:
    app.command("usage", rich_help_panel=panel)(usage)
    app.command("report", rich_help_panel=panel)(report)


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this ISO date or date-time (2024-05-01).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this ISO date or date-time (exclusive).")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Also split per `site` (local, Slurm sites).")
    ] = None,
    fmt: FormatOption = Format.TABLE,
    as_json: JsonFlag = False,
) -> None:
    """Resources used by finished work, per tenant and user (counted when tasks end)."""
    if by not in (None, "site"):
        raise typer.BadParameter("the only split is `site`", param_hint="--by")
    params = {
        "tenant": tenant,
        "since": None if since is None else validate.since(since),
        "until": None if until is None else validate.since(until, "--until"),
        "by": by,
    }
    with Client.from_environment() as client:
        answer = client.get_object(USAGE, params)
    if as_json or fmt is Format.JSON:
        output.print_json(answer)
        return
    rows = [row for row in answer.get("rows") or [] if isinstance(row, dict)]
    totals = [row for row in answer.get("totals") or [] if isinstance(row, dict)]
    if fmt is Format.CSV:
        _write_csv(["tenant", "user", *CSV_AMOUNTS], [[r["tenant"], r["user"]] for r in rows], rows)
        return
    if not rows:
        typer.echo("no usage recorded" + (f" since {since}" if since else ""))
        return
    output.print_table(
        ["TENANT", "USER", *AMOUNTS],
        [[str(r.get("tenant", "")), str(r.get("user", "")), *_amounts(r)] for r in rows],
    )
    typer.echo("\nTotals per tenant:")
    output.print_table(
        ["TENANT", *AMOUNTS], [[str(r.get("tenant", "")), *_amounts(r)] for r in totals]
    )
    sites = [row for row in answer.get("by_site") or [] if isinstance(row, dict)]
    if sites:
        typer.echo("\nPer site:")
        output.print_table(
            ["TENANT", "SITE", *AMOUNTS],
            [[str(r.get("tenant", "")), str(r.get("site", "")), *_amounts(r)] for r in sites],
        )


def report(
    month: Annotated[str, typer.Option(help="The month, YYYY-MM (2026-11).")],
    users: Annotated[bool, typer.Option("--users", help="Also a row per user.")] = False,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """A month's usage per tenant, with each tenant's share of the CPU and GPU hours
    (like ``sreport cluster AccountUtilizationByUser``); tasks count in the month they end."""
    start = _month(month)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    params = {"since": start.isoformat(), "until": end.isoformat()}
    with Client.from_environment() as client:
        answer = client.get_object(USAGE, params)
    totals = [row for row in answer.get("totals") or [] if isinstance(row, dict)]
    rows = [row for row in answer.get("rows") or [] if isinstance(row, dict)]
    cpu_all = sum(float(t.get("cpu_s") or 0) for t in totals)
    gpu_all = sum(float(t.get("gpu_s") or 0) for t in totals)
    lines: list[tuple[str, str, JsonObject]] = []
    for total in totals:
        lines.append((str(total.get("tenant")), "", total))
        if users:
            lines += [
                (str(r["tenant"]), str(r["user"]), r)
                for r in rows
                if r.get("tenant") == total.get("tenant")
            ]
    if fmt is Format.JSON:
        output.print_json({"month": month, "totals": totals, "rows": rows if users else []})
        return
    if fmt is Format.CSV:
        header = ["month", "tenant", "user", *CSV_AMOUNTS, "cpu_share", "gpu_share"]
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        for tenant, user, row in lines:
            writer.writerow(
                [month, tenant, user, *_csv_amounts(row), *_shares(row, cpu_all, gpu_all)]
            )
        return
    typer.echo(f"Usage in {month} (UTC), per tenant; tasks count in the month they end")
    if not totals:
        typer.echo("no usage recorded")
        return
    output.print_table(
        ["TENANT", "USER", *AMOUNTS, "CPU-SHARE", "GPU-SHARE"],
        [
            [tenant, user or output.NONE, *_amounts(row), *_shares(row, cpu_all, gpu_all)]
            for tenant, user, row in lines
        ],
    )


def _month(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a month such as 2026-11", param_hint="--month"
        ) from None


def _shares(row: JsonObject, cpu_all: float, gpu_all: float) -> list[str]:
    return [
        _percent(float(row.get("cpu_s") or 0), cpu_all),
        _percent(float(row.get("gpu_s") or 0), gpu_all),
    ]


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "-"


def _write_csv(header: list[str], keys: list[list[str]], rows: list[JsonObject]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for key, row in zip(keys, rows, strict=True):
        writer.writerow([*key, *_csv_amounts(row)])


def _csv_amounts(row: JsonObject) -> list[str]:
    """Exact numbers for spreadsheets: hours with four decimals, never "<0.0001"."""
    return [
        str(row.get("jobs", 0)),
        str(row.get("tasks", 0)),
        *(
            f"{float(row.get(key) or 0) / 3600:.4f}"
            for key in ("cpu_s", "gpu_s", "memory_gb_s", "wall_s")
        ),
    ]


def _amounts(row: JsonObject) -> list[str]:
    return [
        str(row.get("jobs", 0)),
        str(row.get("tasks", 0)),
        output.hours(float(row.get("cpu_s") or 0)),
        output.hours(float(row.get("gpu_s") or 0)),
        output.hours(float(row.get("memory_gb_s") or 0)),
        output.hours(float(row.get("wall_s") or 0)),
    ]
