"""``virtuai doctor``: can virtual clusters run here, and what did they leave behind."""

from __future__ import annotations

from typing import Annotated

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject
from virtuai.cli.output import JsonFlag

DOCTOR = "/api/v1/doctor"


def register(app: typer.Typer, panel: str) -> None:
    app.command("doctor", rich_help_panel=panel)(doctor)


def doctor(
    fix: Annotated[
        bool, typer.Option("--fix", help="Remove the leaked objects (kills what runs in them).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check the server's virtual-cluster runtime (administrators only).

    Lists kernel objects (network namespaces, bridges, veths, firewall chains,
    cgroups, mounts) and directories that belong to no virtual cluster the
    platform knows, e.g. after a crash; `--fix` removes them.  Exits 1 while
    leaked objects remain.
    """
    with Client.from_environment() as client:
        report = client.post_object(f"{DOCTOR}/fix") if fix else client.get_object(DOCTOR)
    if as_json:
        output.print_json(report)
    else:
        _print(report)
    if report.get("leaked") or report.get("errors"):
        raise typer.Exit(1)


def _print(report: JsonObject) -> None:
    if report.get("virtual_clusters"):
        typer.echo("virtual clusters: available")
    else:
        typer.echo(f"virtual clusters: not available: {report.get('problem')}")
    for obj in report.get("removed") or []:
        typer.echo(f"removed {obj.get('kind')} {obj.get('name')}")
    leaked = report.get("leaked") or []
    if leaked:
        typer.echo(f"{len(leaked)} leaked object(s) (belong to no known virtual cluster):")
        output.print_table(
            ["KIND", "NAME", "CLUSTER"],
            [[str(o.get("kind")), str(o.get("name")), str(o.get("vc") or "-")] for o in leaked],
        )
    elif report.get("virtual_clusters"):
        typer.echo("no leaked objects")
    if report.get("services_isolated"):
        typer.echo("services' replicas: reachable through the server only")
    elif "services_isolated" in report:
        problem = report.get("services_problem")
        typer.echo(f"services' replicas: reachable by any process of the machine: {problem}")
    for error in report.get("errors") or []:
        output.echo_err(f"error: {error}")
