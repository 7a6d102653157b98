"""``virtuai env ...``: the tenant's Python environments, built by the server."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.output import JsonFlag

ENVIRONMENTS = "/api/v1/environments"
FOLLOW_INTERVAL_S = 1.0
MAX_INPUT_BYTES = 256 * 1024  # as the API's limit

TenantOption = Annotated[
    str | None, typer.Option(help="Tenant (default: your only one).", show_default=False)
]
NameArgument = Annotated[str, typer.Argument(help="Environment name.", show_default=False)]


def register(app: typer.Typer, panel: str) -> None:
    env = typer.Typer(help="Python environments: built once per tenant, used by jobs (--env).")
    env.command("create")(create_environment)
    env.command("list")(list_environments)
    env.command("show")(show_environment)
    env.command("logs")(environment_logs)
    env.command("delete")(delete_environment)
    app.add_typer(env, name="env", no_args_is_help=True, rich_help_panel=panel)


def create_environment(
    name: NameArgument,
    pip: Annotated[
        Path | None, typer.Option("--pip", help="A pip requirements file (uploaded).")
    ] = None,
    pyproject: Annotated[
        Path | None,
        typer.Option(help="A project directory: its pyproject.toml dependencies are installed."),
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Python version, e.g. 3.11 (default: the server's).")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Build it with this image's Python, for jobs over the image (submit --image)."
        ),
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an environment; the server builds it in the background (see `env logs -f`).

    The same inputs (requirements, Python version, image) reuse an existing build.
    """
    validate.name(name, "NAME")
    if pip is not None and pyproject is not None:
        raise typer.BadParameter("give at most one of --pip and --pyproject")
    if pip is None and pyproject is None and python is None and image is None:
        raise typer.BadParameter("give --pip FILE, --pyproject DIR, --python VERSION or --image")
    body: JsonObject = {"name": name}
    if tenant is not None:
        body["tenant"] = tenant
    if python is not None:
        body["python"] = python
    if image is not None:
        validate.name(image, "--image")
        body["image"] = image
    if pip is not None:
        body["requirements"] = _read(pip, "--pip")
    if pyproject is not None:
        body["pyproject"] = _read(pyproject / "pyproject.toml", "--pyproject")
    with Client.from_environment() as client:
        env = client.post_object(ENVIRONMENTS, body)
    if as_json:
        output.print_json(env)
    else:
        typer.echo(
            f"environment {env.get('name', name)}: {env.get('state')} (digest {_short(env)})"
        )


def list_environments(tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """List the environments of your tenants."""
    with Client.from_environment() as client:
        envs = client.get_list(ENVIRONMENTS, {"tenant": tenant})
    if as_json:
        output.print_json(envs)
        return
    output.print_table(
        ["TENANT", "NAME", "STATE", "PYTHON", "IMAGE", "KIND", "DIGEST", "CREATED"],
        [
            [
                str(e.get("tenant", "")),
                str(e.get("name", "")),
                str(e.get("state", "")),
                str(e.get("python", "")),
                str(e.get("image") or "-"),
                str(e.get("kind", "")),
                _short(e),
                output.timestamp(e.get("created_at")),
            ]
            for e in envs
        ],
    )


def show_environment(
    name: NameArgument, tenant: TenantOption = None, as_json: JsonFlag = False
) -> None:
    """Show an environment, its state (and why it failed) and the end of its build log."""
    with Client.from_environment() as client:
        env = client.get_object(f"{ENVIRONMENTS}/{segment(name)}", {"tenant": tenant})
        log = client.get_object(f"{ENVIRONMENTS}/{segment(name)}/log", {"tenant": tenant})
    if as_json:
        output.print_json(env)
        return
    output.print_fields(
        [
            ("name", str(env.get("name", ""))),
            ("tenant", str(env.get("tenant", ""))),
            ("state", str(env.get("state", ""))),
            ("reason", str(env.get("reason", "")) or "-"),
            ("python", str(env.get("python", ""))),
            ("image", str(env.get("image") or "-")),
            ("kind", str(env.get("kind", ""))),
            ("digest", str(env.get("digest", ""))),
            ("path", str(env.get("path", ""))),
            ("created", output.timestamp(env.get("created_at"))),
            ("ready", output.timestamp(env.get("ready_at"))),
        ]
    )
    tail = str(log.get("data", "")).splitlines()[-20:]
    if tail:
        typer.echo("build log (last lines):")
        for line in tail:
            typer.echo(f"  {line}")


def environment_logs(
    name: NameArgument,
    tenant: TenantOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until built.")] = False,
) -> None:
    """Print the build log; with -f, follow it until the build is ready or failed."""
    offset = 0
    with Client.from_environment() as client:
        while True:
            chunk = client.get_object(
                f"{ENVIRONMENTS}/{segment(name)}/log", {"tenant": tenant, "offset": offset}
            )
            data = str(chunk.get("data", ""))
            sys.stdout.write(data)
            sys.stdout.flush()
            offset = int(chunk.get("offset", offset))
            if not follow or (chunk.get("state") != "building" and not data):
                break
            if not data:
                time.sleep(FOLLOW_INTERVAL_S)
    if follow and chunk.get("state") == "failed":
        raise typer.Exit(1)


def delete_environment(name: NameArgument, tenant: TenantOption = None) -> None:
    """Delete an environment no live job uses."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{ENVIRONMENTS}/{segment(name)}", params={"tenant": tenant})
    typer.echo(f"environment {name} deleted")


def _read(path: Path, option: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=option) from None
    if len(data) > MAX_INPUT_BYTES:
        raise typer.BadParameter(f"{path} is larger than 256 KiB", param_hint=option)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint=option) from None


def _short(env: JsonObject) -> str:
    return str(env.get("digest", ""))[:12]
