"""``virtuai usage``: accounting per tenant and user, then totals per tenant."""

from __future__ import annotations

from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag

USAGE = "/api/v1/usage"
AMOUNTS = ["JOBS", "TASKS", "CPU-HOURS", "GPU-HOURS", "MEM-GB-HOURS", "WALL-HOURS"]


def register(app: typer.Typer, panel: str) -> None:
    app.command("usage", rich_help_panel=panel)(usage)


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this ISO date or date-time (2024-05-01).")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Also split per `site` (local, Slurm sites).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Resources used by finished and running work, per tenant and user."""
    if by not in (None, "site"):
        raise typer.BadParameter("the only split is `site`", param_hint="--by")
    params = {
        "tenant": tenant,
        "since": None if since is None else validate.since(since),
        "by": by,
    }
    with Client.from_environment() as client:
        report = client.get_object(USAGE, params)
    if as_json:
        output.print_json(report)
        return
    rows = [row for row in report.get("rows") or [] if isinstance(row, dict)]
    totals = [row for row in report.get("totals") or [] if isinstance(row, dict)]
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
    sites = [row for row in report.get("by_site") or [] if isinstance(row, dict)]
    if sites:
        typer.echo("\nPer site:")
        output.print_table(
            ["TENANT", "SITE", *AMOUNTS],
            [[str(r.get("tenant", "")), str(r.get("site", "")), *_amounts(r)] for r in sites],
        )


def _amounts(row: JsonObject) -> list[str]:
    return [
        str(row.get("jobs", 0)),
        str(row.get("tasks", 0)),
        output.hours(float(row.get("cpu_s") or 0)),
        output.hours(float(row.get("gpu_s") or 0)),
        output.hours(float(row.get("memory_gb_s") or 0)),
        output.hours(float(row.get("wall_s") or 0)),
    ]
