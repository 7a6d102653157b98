"""``virtuai scancel``, ``virtuai sinfo`` and ``virtuai slurm install-shims``.

The shims are thin ``sbatch squeue sacct scancel sinfo srun`` scripts that
exec this virtuai, so wrapper scripts written for Slurm work unchanged.  Each
carries a marker line; ``--uninstall`` removes only files that have it, and
an existing command that is not a shim is never overwritten.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from virtuai.cli import output
from virtuai.cli.client import ApiError, Client, JsonObject, segment
from virtuai.cli.slurmq import JOBS, LIST_LIMIT, SLURM_CONTEXT, job_matches, parse_states
from virtuai.slurmfront import report

SHIM_MARKER = "# virtuai-slurm-shim"
SHIMS = ("sbatch", "squeue", "sacct", "scancel", "sinfo", "srun")
CANCEL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT})

slurm_app = typer.Typer(help="Slurm habits: shims for wrapper scripts.", no_args_is_help=True)


def register(app: typer.Typer, panel: str) -> None:
    app.command("scancel", context_settings=SLURM_CONTEXT, rich_help_panel=panel)(scancel)
    app.command("sinfo", context_settings=SLURM_CONTEXT, rich_help_panel=panel)(sinfo)
    app.add_typer(slurm_app, name="slurm", rich_help_panel=panel)


def scancel(
    job_ids: Annotated[
        list[str] | None, typer.Argument(help="Job ids: 12, 12_3 (one element), array ids.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's jobs.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Only jobs of this name.")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", "-t", help="Only jobs in this state (PD, R).")
    ] = None,
    sig: Annotated[
        str | None, typer.Option("--signal", "-s", help="Only KILL, TERM or INT: cancel.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-Q", help="No error for ended jobs.")] = False,
) -> None:
    """Cancel jobs, as Slurm's scancel does; silent on success."""
    if sig is not None:
        _check_signal(sig)
    if not job_ids and not (user or name or state):
        output.echo_err("scancel: error: No job identification provided")
        raise typer.Exit(1)
    wanted = parse_states(state, "--state") if state else report.ACTIVE
    failed = False
    with Client.from_environment() as client:
        rows = client.get_list(JOBS, {"limit": LIST_LIMIT})
        matched = [
            r
            for r in rows
            if (not job_ids or job_matches(r, ",".join(job_ids)))
            and (user is None or r.get("user") == user)
            and (name is None or r.get("name") == name)
        ]
        for ident in job_ids or []:
            if not any(job_matches(r, ident) for r in matched) and not quiet:
                output.echo_err(
                    f"scancel: error: Kill job error on job id {ident}: Invalid job id specified"
                )
                failed = True
        for row in matched:
            if row.get("state") not in wanted:
                if job_ids and not quiet and row.get("state") not in report.ACTIVE:
                    output.echo_err(
                        f"scancel: error: Kill job error on job id {report.job_id(row)}: "
                        "Job/step already completing or completed"
                    )
                continue
            failed |= not _cancel(client, row)
    if failed:
        raise typer.Exit(1)


def _check_signal(text: str) -> None:
    raw = text.strip().upper()
    name = raw if raw.startswith("SIG") else f"SIG{raw}"
    try:
        signo = (
            signal.Signals(int(raw)) if raw.isascii() and raw.isdigit() else signal.Signals[name]
        )
    except (KeyError, ValueError):
        raise typer.BadParameter(f"unknown signal {text!r}", param_hint="--signal") from None
    if signo not in CANCEL_SIGNALS:
        output.echo_err(
            f"scancel: error: virtuai cannot send {signo.name} to a job yet; "
            "scancel without -s (or with -s KILL/TERM/INT) cancels it"
        )
        raise typer.Exit(1)


def _cancel(client: Client, row: JsonObject) -> bool:
    try:
        client.post_object(f"{JOBS}/{segment(int(row['id']))}/cancel")
    except ApiError as error:
        output.echo_err(f"scancel: error: Kill job error on job id {report.job_id(row)}: {error}")
        return False
    return True


def sinfo() -> None:
    """Pools and their nodes, with Slurm's default columns."""
    with Client.from_environment() as client:
        nodes = client.get_list("/api/v1/nodes")
    for line in report.sinfo_lines(nodes):
        typer.echo(line)


@slurm_app.command("install-shims")
def install_shims(
    prefix: Annotated[Path, typer.Option(help="Directory to install into (on your PATH).")] = Path(
        "~/.local/bin"
    ),
    uninstall: Annotated[bool, typer.Option(help="Remove the shims instead.")] = False,
) -> None:
    """Install sbatch, squeue, sacct, scancel, sinfo and srun as thin commands calling virtuai."""
    directory = prefix.expanduser()
    if uninstall:
        for name in SHIMS:
            path = directory / name
            if path.is_file() and SHIM_MARKER in path.read_text(errors="replace"):
                path.unlink()
                typer.echo(f"removed {path}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name in SHIMS:
        path = directory / name
        if path.exists() and SHIM_MARKER not in path.read_text(errors="replace"):
            output.echo_err(f"warning: {path} exists and is not a virtuai shim: left alone")
            continue
        path.write_text(shim_text(name))
        path.chmod(0o755)
        typer.echo(f"installed {path}")


def shim_text(name: str) -> str:
    """A shim: inside a virtuai job, ``srun`` is the job's own (first on PATH), not this."""
    return (
        f"#!/bin/sh\n{SHIM_MARKER}: Slurm's {name}, answered by virtuai "
        "(`virtuai slurm install-shims --uninstall` removes it)\n"
        f'exec "{sys.executable}" -m virtuai {name} "$@"\n'
    )
