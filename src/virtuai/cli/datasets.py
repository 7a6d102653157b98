"""``virtuai dataset ...``: a tenant's datasets, on a site or here; jobs use them (--data)."""

from __future__ import annotations

from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.output import JsonFlag

DATASETS = "/api/v1/datasets"

TenantOption = Annotated[
    str | None, typer.Option(help="Tenant (default: your only one).", show_default=False)
]
NameArgument = Annotated[str, typer.Argument(help="Dataset name.", show_default=False)]


def register(app: typer.Typer, panel: str) -> None:
    data = typer.Typer(
        help="Datasets: where a tenant's data is; jobs with --data run there (or --stage it)."
    )
    data.command("add")(add_dataset)
    data.command("list")(list_datasets)
    data.command("show")(show_dataset)
    data.command("remove")(remove_dataset)
    app.add_typer(data, name="dataset", no_args_is_help=True, rich_help_panel=panel)


def add_dataset(
    name: NameArgument,
    path: Annotated[str, typer.Option("--path", help="Its absolute path there.")],
    site: Annotated[
        str | None,
        typer.Option(
            "--site", help="The site it is on; without: here (in your tenant's workspace)."
        ),
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Record where a dataset is (the server checks that the path exists there)."""
    validate.name(name, "NAME")
    if not path.startswith("/"):
        raise typer.BadParameter("must be an absolute path", param_hint="--path")
    body: JsonObject = {"name": name, "path": path}
    if site is not None:
        body["site"] = site
    if tenant is not None:
        body["tenant"] = tenant
    with Client.from_environment() as client:
        row = client.post_object(DATASETS, body)
    if as_json:
        output.print_json(row)
    else:
        typer.echo(f"dataset {row.get('name', name)}: {_where(row)}")


def list_datasets(tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """List the datasets of your tenants."""
    with Client.from_environment() as client:
        rows = client.get_list(DATASETS, {"tenant": tenant})
    if as_json:
        output.print_json(rows)
        return
    output.print_table(
        ["TENANT", "NAME", "WHERE", "JOBS", "COPIES"],
        [
            [
                str(r.get("tenant", "")),
                str(r.get("name", "")),
                _where(r),
                str(r.get("jobs", 0)),
                ", ".join(f"{c.get('site')} {c.get('state')}" for c in _copies(r)) or "-",
            ]
            for r in rows
        ],
    )


def show_dataset(
    name: NameArgument, tenant: TenantOption = None, as_json: JsonFlag = False
) -> None:
    """Show a dataset and the copies staged from it (with rsync's progress)."""
    with Client.from_environment() as client:
        row = client.get_object(f"{DATASETS}/{segment(name)}", {"tenant": tenant})
    if as_json:
        output.print_json(row)
        return
    output.print_fields(
        [
            ("name", str(row.get("name", ""))),
            ("tenant", str(row.get("tenant", ""))),
            ("where", _where(row)),
            ("unfinished jobs", str(row.get("jobs", 0))),
            ("created", f"{output.timestamp(row.get('created_at'))} by {row.get('created_by')}"),
        ]
    )
    for copy in _copies(row):
        typer.echo(
            f"copy at {copy.get('site')}:{copy.get('path') or '?'}: {copy.get('state')} "
            f"{copy.get('progress') or ''} {copy.get('message') or ''}".rstrip()
        )


def remove_dataset(name: NameArgument, tenant: TenantOption = None) -> None:
    """Forget a dataset no unfinished job reads (its files stay where they are)."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{DATASETS}/{segment(name)}", params={"tenant": tenant})
    typer.echo(f"dataset {name} removed")


def _where(row: JsonObject) -> str:
    site = row.get("site")
    return f"{site}:{row.get('path')}" if site else f"here:{row.get('path')}"


def _copies(row: JsonObject) -> list[JsonObject]:
    copies = row.get("copies")
    return [c for c in copies if isinstance(c, dict)] if isinstance(copies, list) else []
