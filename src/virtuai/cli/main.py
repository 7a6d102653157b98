"""The ``virtuai`` command: the Typer app, built from one module per command group.

Every ``VirtuaiError`` a command raises (the server's refusals, an unreachable
server, a broken config file) ends as one line on stderr, ``error: <message>``
plus `` (field: x)`` when a field is to blame, and exit status 1.  Usage errors
are Typer's own (exit 2).  This is done by the root group, so the console
script and ``CliRunner`` behave alike.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from virtuai import __version__
from virtuai.cli import (
    accounts,
    datasets,
    doctor,
    environments,
    fairshare,
    images,
    jobs,
    login,
    nodes,
    notebooks,
    output,
    portforward,
    sbatch,
    services,
    sim,
    sites,
    slurmctl,
    slurmq,
    srun,
    submit,
    tenants,
    up,
    usage,
    users,
    vclusters,
)
from virtuai.errors import VirtuaiError

API_ERROR_EXIT = 1
JOBS_PANEL = "Jobs"
ACCOUNTS_PANEL = "Tenants and users"
PLATFORM_PANEL = "Platform"
VC_PANEL = "Virtual clusters"
SLURM_PANEL = "Slurm habits"


class RootGroup(TyperGroup):
    """Turns the errors of every subcommand into one clear line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VirtuaiError as exc:
            output.echo_err(error_line(exc))
            raise typer.Exit(API_ERROR_EXIT) from None


def error_line(exc: VirtuaiError) -> str:
    message = " ".join(str(exc.message).split()) or type(exc).__name__
    # The server's validation messages already start with the field's name.
    named = not exc.field or message.startswith(f"{exc.field}:")
    return f"error: {message}" + ("" if named else f" (field: {exc.field})")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"virtuai {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """virtuai: run AI jobs on shared machines, fairly, across tenants.

    Server: $VIRTUAI_URL, else the url in ~/.config/virtuai/cli.yaml, else 127.0.0.1:8642.

    Token: $VIRTUAI_TOKEN, else the file's (`virtuai up` writes the file at first start).
    """


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="virtuai",
        cls=RootGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,  # locals hold the token
    )
    app.callback()(root)
    submit.register(app, JOBS_PANEL)
    jobs.register(app, JOBS_PANEL)
    vclusters.register(app, VC_PANEL)
    images.register(app, VC_PANEL)
    users.register(app, ACCOUNTS_PANEL)
    tenants.register(app, ACCOUNTS_PANEL)
    accounts.register(app, ACCOUNTS_PANEL)
    usage.register(app, PLATFORM_PANEL)
    fairshare.register(app, PLATFORM_PANEL)
    nodes.register(app, PLATFORM_PANEL)
    up.register(app, PLATFORM_PANEL)
    doctor.register(app, PLATFORM_PANEL)
    sim.register(app, PLATFORM_PANEL)
    sbatch.register(app, SLURM_PANEL)
    srun.register(app, SLURM_PANEL)
    slurmq.register(app, SLURM_PANEL)
    slurmctl.register(app, SLURM_PANEL)
    sites.register(app, PLATFORM_PANEL)
    environments.register(app, JOBS_PANEL)
    portforward.register(app, JOBS_PANEL)
    datasets.register(app, JOBS_PANEL)
    notebooks.register(app, JOBS_PANEL)
    services.register(app, JOBS_PANEL)
    login.register(app, ACCOUNTS_PANEL)
    return app


app = build_app()


def main() -> None:
    """The console script."""
    app(prog_name="virtuai")
