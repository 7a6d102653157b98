"""``virtuai notebook ...``: JupyterLab notebooks behind the server's proxy."""

from __future__ import annotations

import sys
import time
import webbrowser
from typing import Annotated, Any

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import ApiError, Client, JsonObject, segment
from virtuai.cli.output import JsonFlag

NOTEBOOKS = "/api/v1/notebooks"
ENVIRONMENTS = "/api/v1/environments"
POLL_S = 1.0
ENV_WAIT_S = 3600.0

NameArgument = Annotated[str, typer.Argument(help="Notebook name.", show_default=False)]
TenantOption = Annotated[
    str | None, typer.Option(help="Tenant (default: your only one).", show_default=False)
]


def register(app: typer.Typer, panel: str) -> None:
    notebook = typer.Typer(help="JupyterLab notebooks: at /user/<you>/<name>/ on the server.")
    notebook.command("start")(start_notebook)
    notebook.command("list")(list_notebooks)
    notebook.command("open")(open_notebook)
    notebook.command("stop")(stop_notebook)
    app.add_typer(notebook, name="notebook", no_args_is_help=True, rich_help_panel=panel)


def start_notebook(
    name: Annotated[str, typer.Argument(help="Notebook name.")] = "lab",
    cpu: Annotated[str | None, typer.Option(help="CPUs, e.g. 2 or 500m.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory, e.g. 4Gi.")] = None,
    gpu: Annotated[int, typer.Option(min=0, help="GPUs.")] = 0,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Time limit (default: the server's, 8h).")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(help="A ready environment of the tenant with JupyterLab (`virtuai env`)."),
    ] = None,
    vc: Annotated[str | None, typer.Option(help="Not offered: notebooks run on nodes.")] = None,
    priority: Annotated[str, typer.Option(help="Priority class.")] = "normal",
    tenant: TenantOption = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for the default environment's build if needed.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Start a notebook; `virtuai notebook open NAME` prints its address.

    Without --env, the tenant's first notebook waits while the server
    builds its `notebook` environment (JupyterLab, from the package index).
    """
    validate.name(name, "NAME")
    body: JsonObject = {"name": name, "priority": priority}
    if tenant is not None:
        body["tenant"] = tenant
    if cpu is not None or memory is not None or gpu:
        body["resources"] = {"cpu": cpu or "1", "memory": memory or "1Gi", "gpu": gpu}
    if time_limit is not None:
        body["time"] = time_limit
    if env is not None:
        body["environment"] = env
    if vc is not None:
        body["vc"] = vc
    deadline = time.monotonic() + ENV_WAIT_S
    with Client.from_environment() as client:
        while True:
            try:
                notebook = client.post_object(NOTEBOOKS, body)
                break
            except ApiError as error:
                if not (wait and error.status == 409 and error.field == "environment"):
                    raise
                if time.monotonic() > deadline:
                    raise
                _wait_for_environment(client, env or "notebook", tenant)
    if as_json:
        output.print_json(notebook)
        return
    typer.echo(
        f"notebook {notebook.get('name')} (job {notebook.get('id')}): {notebook.get('state')}"
    )
    typer.echo(f"  {notebook.get('url')}")


def _wait_for_environment(client: Client, name: str, tenant: str | None) -> None:
    # Not the server's message ("start the notebook when it is ready"): this does it.
    typer.echo(
        f"building the environment {name} first (`virtuai env logs {name} -f` follows it); "
        "the notebook starts when it is ready",
        err=True,
    )
    while True:
        found = client.get_object(f"{ENVIRONMENTS}/{segment(name)}", {"tenant": tenant})
        if found.get("state") != "building":
            sys.stderr.write("\n")
            return
        sys.stderr.write(".")
        sys.stderr.flush()
        time.sleep(POLL_S)


def list_notebooks(
    all_users: Annotated[
        bool, typer.Option("--all", help="Every user's you can see, not only yours.")
    ] = False,
    finished: Annotated[bool, typer.Option(help="Also the ended ones.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List your notebooks."""
    params: dict[str, Any] = {"all": all_users, "finished": finished}
    with Client.from_environment() as client:
        notebooks = client.get_list(NOTEBOOKS, params)
    if as_json:
        output.print_json(notebooks)
        return
    output.print_table(
        ["JOB", "USER", "NAME", "TENANT", "STATE", "URL", "REASON"],
        [
            [
                str(n.get("id", "")),
                str(n.get("user", "")),
                str(n.get("name", "")),
                str(n.get("tenant", "")),
                str(n.get("state", "")),
                str(n.get("url", "")),
                str(n.get("reason", "")),
            ]
            for n in notebooks
        ],
    )


def open_notebook(
    name: NameArgument,
    browser: Annotated[bool, typer.Option("--browser", help="Open it in a web browser.")] = False,
) -> None:
    """Print the notebook's address (sign in to the dashboard in that browser first)."""
    with Client.from_environment() as client:
        notebook = client.get_object(f"{NOTEBOOKS}/{segment(name)}")
    url = str(notebook.get("url", ""))
    typer.echo(url)
    if browser:
        webbrowser.open(url)


def stop_notebook(
    name: NameArgument,
    user: Annotated[
        str | None, typer.Option(help="Another user's (owners of its tenant, admins).")
    ] = None,
) -> None:
    """Stop a notebook; the files in your home stay."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{NOTEBOOKS}/{segment(name)}", params={"user": user})
    typer.echo(f"notebook {name}: stopping")
