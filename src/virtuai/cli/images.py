"""``virtuai image ...``: the root file systems of virtual clusters' nodes."""

from __future__ import annotations

from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, JsonObject, segment
from virtuai.cli.config import load_connection
from virtuai.cli.output import JsonFlag

IMAGES = "/api/v1/images"
IMPORT_TIMEOUT_S = 3600.0  # the server unpacks or copies a whole root file system


def register(app: typer.Typer, panel: str) -> None:
    image = typer.Typer(help="Images: read-only root file systems of virtual nodes.")
    image.command("list")(list_images)
    image.command("import")(import_image)
    image.command("delete")(delete_image)
    app.add_typer(image, name="image", no_args_is_help=True, rich_help_panel=panel)


def list_images(as_json: JsonFlag = False) -> None:
    """List images; `host` (the server's own root file system) is built in."""
    with Client.from_environment() as client:
        images = client.get_list(IMAGES)
    if as_json:
        output.print_json(images)
        return
    output.print_table(
        ["NAME", "SIZE", "CREATED", "SOURCE"],
        [
            [
                str(i.get("name", "")),
                "built in" if i.get("builtin") else output.memory_approx(i.get("size_bytes")),
                output.timestamp(i.get("created_at")),
                str(i.get("source", "")),
            ]
            for i in images
        ],
    )


def import_image(
    *,
    name: Annotated[str, typer.Argument(help="Image name (a DNS label).", show_default=False)],
    from_tar: Annotated[
        str | None,
        typer.Option(help="A root file system tarball ON THE SERVER'S MACHINE (absolute path)."),
    ] = None,
    from_dir: Annotated[
        str | None,
        typer.Option(help="A root file system directory ON THE SERVER'S MACHINE (copied)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import an image (administrators only).

    The path is read by the server, as root, on the machine it runs on: it is
    not uploaded from here.  The image must contain a sleep program (the nodes'
    init) and is read-only once imported.
    """
    validate.name(name, "NAME")
    if (from_tar is None) == (from_dir is None):
        raise typer.BadParameter("give exactly one of --from-tar and --from-dir")
    for option, path in (("--from-tar", from_tar), ("--from-dir", from_dir)):
        if path is not None and not path.startswith("/"):
            raise typer.BadParameter(
                "give an absolute path on the server's machine", param_hint=option
            )
    body: JsonObject = {"name": name, "from_tar": from_tar, "from_dir": from_dir}
    with Client(load_connection(), timeout=IMPORT_TIMEOUT_S) as client:
        image = client.post_object(IMAGES, {k: v for k, v in body.items() if v is not None})
    if as_json:
        output.print_json(image)
    else:
        size = output.memory_approx(image.get("size_bytes"))
        typer.echo(f"image {image.get('name', name)} imported ({size})")


def delete_image(
    name: Annotated[str, typer.Argument(help="Image name.", show_default=False)],
) -> None:
    """Delete an imported image no virtual cluster uses (administrators only)."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{IMAGES}/{segment(name)}")
    typer.echo(f"image {name} deleted")
