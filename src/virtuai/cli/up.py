"""``virtuai up``: run the server here, in the foreground (API, scheduler, loops).

The command replaces itself with ``python -m virtuai.server`` (same process,
same signals) so that every other command starts without importing the
server's half-second of modules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, panel: str) -> None:
    app.command("up", rich_help_panel=panel)(up)


def up(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on; default: the settings' (127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on; default: the settings' (8642).", min=0, max=65535),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL; default: SQLite in the home directory. One with a "
            "password is better given as VIRTUAI_DATABASE_URL (others can read arguments).",
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="State directory; default: $VIRTUAI_HOME or ~/.local/share/virtuai."),
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="This machine's node name; default: the hostname.")
    ] = None,
    node_class: Annotated[
        str | None, typer.Option("--class", help="Node class: light, fat or gpu.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="A node label k=v (repeatable).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Where other machines reach this one.")
    ] = None,
    proxy_engine: Annotated[
        str | None,
        typer.Option(
            "--proxy-engine",
            help="auto (nginx if installed, else builtin), builtin, or nginx in front "
            "(needs nginx and its Lua module); default: the settings' proxy.engine (auto).",
        ),
    ] = None,
    api_workers: Annotated[
        str | None,
        typer.Option(
            "--api-workers",
            help="Processes serving the REST API (N, or auto); default: the settings' "
            "server.api_workers (1).",
        ),
    ] = None,
) -> None:
    """Start the virtuai server on this machine; unset options come from its settings."""
    argv = [sys.executable, "-m", "virtuai.server"]
    for flag, value in (
        ("--host", host),
        ("--port", port),
        ("--database-url", database_url),
        ("--home", home),
        ("--node", node),
        ("--class", node_class),
        ("--address", address),
        ("--proxy-engine", proxy_engine),
        ("--api-workers", api_workers),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for item in label or []:
        argv += ["--label", item]
    os.execv(sys.executable, argv)
