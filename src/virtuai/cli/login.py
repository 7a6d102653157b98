"""``virtuai login``: point the CLI at a server with a token, as a user on their own machine.

``virtuai up`` writes the config file for the administrator on the server's machine; a
user elsewhere had only ``export VIRTUAI_URL=... VIRTUAI_TOKEN=...``.  ``login`` asks
the server who the token belongs to before writing anything, so a mistyped token or
URL is said at once, never found out at the next command.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from virtuai.cli import output
from virtuai.cli.client import Client
from virtuai.cli.config import URL_VAR, Connection, _checked_urls, load_connection
from virtuai.cli.users import memberships
from virtuai.clientconfig import cli_config_path, write_cli_config


def register(app: typer.Typer, panel: str) -> None:
    app.command("login", rich_help_panel=panel)(login)


def login(
    url: Annotated[
        str | None,
        typer.Argument(
            help=f"The server, e.g. http://virtuai.example.org:8642 (default: ${URL_VAR}, "
            "else the config file's, else http://127.0.0.1:8642).",
            show_default=False,
        ),
    ] = None,
    token_stdin: Annotated[
        bool,
        typer.Option(
            "--token-stdin", help="Read the token from stdin (default: ask for it, hidden)."
        ),
    ] = False,
) -> None:
    """Check a token with the server and save both in ~/.config/virtuai/cli.yaml (0600)."""
    target = url.strip() if url else load_connection().url
    urls = _checked_urls(target, "the command line")
    if token_stdin or not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    else:
        token = str(typer.prompt("API token (vai_...)", hide_input=True)).strip()
    if not token:
        raise typer.BadParameter("no token given", param_hint="token")
    path = cli_config_path()
    connection = Connection(
        url=urls[0],
        token=token,
        url_source="the command line",
        token_source="the token given",
        config_path=path,
        urls=urls,
    )
    with Client(connection) as client:
        me = client.get_object("/api/v1/whoami")
    write_cli_config(",".join(urls), token, path)
    tenants = memberships(me.get("tenants")) or output.NONE
    typer.echo(f"logged in to {urls[0]} as {me.get('name', '?')} (tenants: {tenants})")
    output.echo_err(f"saved in {path} (mode 0600); {URL_VAR} and VIRTUAI_TOKEN override it")
