"""``virtuai whoami`` and ``virtuai user ...``.

A new token is printed alone on stdout (so ``t=$(virtuai user token bob)``
works) and a hint on stderr; the server shows it only this once.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtuai.cli import accounts, output, validate
from virtuai.cli.client import Client, segment
from virtuai.cli.config import TOKEN_VAR
from virtuai.cli.output import JsonFlag
from virtuai.domain.tenancy import Role

USERS = "/api/v1/users"


def register(app: typer.Typer, panel: str) -> None:
    app.command("whoami", rich_help_panel=panel)(whoami)
    user = typer.Typer(help="Users and their API tokens.")
    user.command("create")(create_user)
    user.command("list")(list_users)
    user.command("token")(new_token)
    accounts.add_user_commands(user)
    app.add_typer(user, name="user", no_args_is_help=True, rich_help_panel=panel)


def whoami(as_json: JsonFlag = False) -> None:
    """Who the configured token belongs to, and the tenants you are in."""
    with Client.from_environment() as client:
        me = client.get_object("/api/v1/whoami")
    if as_json:
        output.print_json(me)
        return
    output.print_fields(
        [
            ("User", str(me.get("name", ""))),
            ("Admin", "yes" if me.get("is_admin") else "no"),
            ("Tenants", memberships(me.get("tenants")) or output.NONE),
            ("Server", client.connection.url),
        ]
    )


def create_user(
    name: Annotated[str, typer.Argument(help="User name (a DNS label).")],
    tenant: Annotated[
        str | None, typer.Option(help="Make the user a member of this tenant.")
    ] = None,
    role: Annotated[Role, typer.Option(help="Role in --tenant.")] = Role.MEMBER,
    admin: Annotated[bool, typer.Option("--admin", help="A platform administrator.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a user and print their first API token (shown only once)."""
    validate.name(name, "NAME")
    if tenant is not None:
        validate.name(tenant, "--tenant")
    body = {"name": name, "tenant": tenant, "role": role.value, "admin": admin}
    with Client.from_environment() as client:
        created = client.post_object(USERS, body)
    if as_json:
        output.print_json(created)
        return
    _print_token(str(created.get("token", "")), f"user {name} created")


def list_users(as_json: JsonFlag = False) -> None:
    """All users (admins), with their tenants and roles."""
    with Client.from_environment() as client:
        users = client.get_list(USERS)
    if as_json:
        output.print_json(users)
        return
    output.print_table(
        ["NAME", "ADMIN", "SOURCE", "TENANTS", "CREATED"],
        [
            [
                str(u.get("name", "")),
                "yes" if u.get("is_admin") else "no",
                str(u.get("source") or output.NONE),
                memberships(u.get("tenants")) or output.NONE,
                output.timestamp(u.get("created_at")),
            ]
            for u in users
        ],
    )


def new_token(
    name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonFlag = False
) -> None:
    """Make a new API token for a user and print it (shown only once)."""
    with Client.from_environment() as client:
        created = client.post_object(f"{USERS}/{segment(name)}/tokens")
    if as_json:
        output.print_json(created)
        return
    _print_token(str(created.get("token", "")), f"new token for {name}")


def memberships(tenants: Any) -> str:
    """``ml (owner), vision (member)``."""
    if not isinstance(tenants, list):
        return ""
    return ", ".join(f"{m.get('tenant')} ({m.get('role')})" for m in tenants if isinstance(m, dict))


def _print_token(token: str, what: str) -> None:
    typer.echo(token)
    output.echo_err(
        f"{what}; the token above is shown only this once. To use it: export {TOKEN_VAR}={token}"
    )
