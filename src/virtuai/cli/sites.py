"""``virtuai site ...``: Slurm clusters the platform sends work to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.config import load_connection
from virtuai.cli.output import JsonFlag

SITES = "/api/v1/sites"
ADD_TIMEOUT_S = 120.0  # the server reads the host key and asks the site for its partitions


def register(app: typer.Typer, panel: str) -> None:
    site = typer.Typer(help="Sites: Slurm clusters jobs can run on (--site NAME).")
    site.command("add")(add_site)
    site.command("list")(list_sites)
    site.command("show")(show_site)
    site.command("remove")(remove_site)
    app.add_typer(site, name="site", no_args_is_help=True, rich_help_panel=panel)


def _read(path: str, option: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise typer.BadParameter(
            f"cannot read {path}: {error.strerror}", param_hint=option
        ) from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint=option) from None


def _account_map(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        tenant, sep, account = pair.partition("=")
        if not sep or not tenant or not account:
            raise typer.BadParameter(
                f"{pair!r}: expected TENANT=ACCOUNT", param_hint="--account-map"
            )
        out[tenant] = account
    return out


def add_site(
    *,
    name: Annotated[str, typer.Argument(help="Site name (lower case, digits, '-').")],
    slurm: Annotated[bool, typer.Option("--slurm", help="The site is a Slurm cluster.")] = False,
    login: Annotated[
        str | None, typer.Option(help="SSH to the login node: user@host[:port].")
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option(help="Private key file for --login (sent to the server, kept 0600)."),
    ] = None,
    known_hosts: Annotated[
        str | None,
        typer.Option(
            help="known_hosts file with the login node's key; default: trust its key now."
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="sbatch works on the server's own machine.")
    ] = False,
    partition: Annotated[
        str | None, typer.Option(help="Slurm partition; default: the cluster's default.")
    ] = None,
    account_map: Annotated[
        list[str] | None,
        typer.Option(help="Tenant's Slurm account, repeatable.", metavar="TENANT=ACCOUNT"),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="At most this many jobs at once.", min=1)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a Slurm site (administrators only); its pool is NAME:PARTITION."""
    if not slurm:
        raise typer.BadParameter("only Slurm sites exist: give --slurm", param_hint="--slurm")
    if local == (login is not None):
        raise typer.BadParameter("give exactly one of --login and --local", param_hint="--login")
    if login is not None and identity is None:
        raise typer.BadParameter("--login needs --identity KEYFILE", param_hint="--identity")
    body: JsonObject = {
        "name": name,
        "local": local,
        "login": login,
        "identity": None if identity is None else _read(identity, "--identity"),
        "known_hosts": None if known_hosts is None else _read(known_hosts, "--known-hosts"),
        "partition": partition,
        "account_map": _account_map(account_map or []),
        "max_jobs": max_jobs,
    }
    with Client(load_connection(), timeout=ADD_TIMEOUT_S) as client:
        site = client.post_object(SITES, {k: v for k, v in body.items() if v is not None})
    if as_json:
        output.print_json(site)
    else:
        typer.echo(f"site {site.get('name')} added: pool {site.get('pool')}")


def list_sites(as_json: JsonFlag = False) -> None:
    """List sites with their health, capacity and queue."""
    with Client.from_environment() as client:
        sites = client.get_list(SITES)
    if as_json:
        output.print_json(sites)
        return
    output.print_table(
        ["NAME", "STATE", "HEALTH", "POOL", "NODES", "GPUS", "RUNNING", "QUEUED", "LAST SEEN"],
        [
            [
                str(s.get("name", "")),
                str(s.get("state", "")),
                str(s.get("health", "")),
                str(s.get("pool", "")),
                _nodes(s.get("capacity") or {}),
                str((s.get("capacity") or {}).get("gpus", "-")),
                str(s.get("running_jobs", 0)),
                str(s.get("queue_depth", 0)),
                output.timestamp(s.get("last_seen_at")),
            ]
            for s in sites
        ],
    )


def _nodes(capacity: dict[str, Any]) -> str:
    if "nodes" not in capacity:
        return "-"
    return f"{capacity.get('nodes_up', 0)}/{capacity['nodes']}"


def show_site(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """A site's connection, health, partitions, capacity and queue depth."""
    with Client.from_environment() as client:
        site = client.get_object(f"{SITES}/{segment(name)}")
    if as_json:
        output.print_json(site)
        return
    capacity = site.get("capacity") or {}
    accounts = ", ".join(f"{t}={a}" for t, a in (site.get("account_map") or {}).items())
    output.print_fields(
        [
            ("name", str(site.get("name", ""))),
            ("kind", str(site.get("kind", ""))),
            ("state", str(site.get("state", ""))),
            ("login", "local" if site.get("local") else str(site.get("login", ""))),
            ("pool", str(site.get("pool", ""))),
            ("partition", str(site.get("partition") or "")),
            ("accounts", accounts or "-"),
            ("max jobs", str(site.get("max_jobs") or "-")),
            ("health", str(site.get("health", ""))),
            ("message", str(site.get("message") or "-")),
            ("nodes", _nodes(capacity)),
            ("cpus", str(capacity.get("cpus", "-"))),
            ("memory", output.memory((capacity.get("memory_mb") or 0) * 2**20)),
            ("gpus", str(capacity.get("gpus", "-"))),
            ("running jobs", str(site.get("running_jobs", 0))),
            ("queue depth", str(site.get("queue_depth", 0))),
            ("expected wait", _wait(site.get("expected_wait_s"))),
            ("last seen", output.timestamp(site.get("last_seen_at"))),
            ("unreachable since", output.timestamp(site.get("unreachable_since"))),
        ]
    )
    partitions = site.get("partitions") or []
    if partitions:
        typer.echo("partitions:")
        output.print_table(
            ["NAME", "DEFAULT", "MAX TIME", "STATE"],
            [
                [
                    str(p.get("name", "")),
                    "yes" if p.get("default") else "",
                    output.duration(p.get("max_time_s")) if p.get("max_time_s") else "unlimited",
                    str(p.get("state", "")),
                ]
                for p in partitions
            ],
        )


def remove_site(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
) -> None:
    """Drain a site (administrators only): no new jobs; removed when its last job ends."""
    with Client.from_environment() as client:
        site = client.request("DELETE", f"{SITES}/{segment(name)}")
    state = site.get("state") if isinstance(site, dict) else None
    typer.echo(f"site {name} {'draining' if state == 'draining' else 'removed'}")


def _wait(seconds: object) -> str:
    """Slurm's backlog for a job submitted there now (``squeue --start``)."""
    if not isinstance(seconds, int):
        return "unknown"
    return "none" if seconds == 0 else f"{seconds // 60} min {seconds % 60} s"
