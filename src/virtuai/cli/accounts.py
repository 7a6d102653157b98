"""``virtuai token ...``, and disabling and deleting users and tenants.

``token create`` prints the new token alone on stdout (``t=$(virtuai token
create)`` works) and a hint on stderr; the server shows it only this once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from virtuai.cli import output, validate
from virtuai.cli.client import Client, segment
from virtuai.cli.config import TOKEN_VAR
from virtuai.cli.output import JsonFlag

TOKENS = "/api/v1/tokens"
USERS = "/api/v1/users"
TENANTS = "/api/v1/tenants"

UserName = Annotated[str, typer.Argument(help="User name.")]
TenantName = Annotated[str, typer.Argument(help="Tenant name.")]


def register(app: typer.Typer, panel: str) -> None:
    token = typer.Typer(help="Your API tokens: create (shown once), list, revoke.")
    token.command("create")(create_token)
    token.command("list")(list_tokens)
    token.command("revoke")(revoke_token)
    app.add_typer(token, name="token", no_args_is_help=True, rich_help_panel=panel)


def add_user_commands(user: typer.Typer) -> None:
    user.command("disable")(disable_user)
    user.command("enable")(enable_user)
    user.command("delete")(delete_user)
    user.command("remove")(remove_member)


def add_tenant_commands(tenant: typer.Typer) -> None:
    tenant.command("disable")(disable_tenant)
    tenant.command("enable")(enable_tenant)
    tenant.command("delete")(delete_tenant)


def create_token(
    name: Annotated[str | None, typer.Option(help="A name to recognise it by.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 30d, 12h, 90m; default: never expires.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a new API token for yourself and print it (shown only once)."""
    if expires is not None:
        validate.duration(expires, "--expires")
    with Client.from_environment() as client:
        created = client.post_object(TOKENS, {"name": name, "expires": expires})
    if as_json:
        output.print_json(created)
        return
    token = str(created.get("token", ""))
    typer.echo(token)
    until = created.get("expires_at")
    output.echo_err(
        f"token {created.get('id')} created"
        + (f", valid until {output.timestamp(until)}" if until else ", never expires")
        + f"; shown only this once. To use it: export {TOKEN_VAR}={token}"
    )


def list_tokens(
    user: Annotated[str | None, typer.Option(help="Another user's tokens (admins).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user's tokens (admins).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Your tokens (never the secrets): when made, when they expire, when last used."""
    params = {"user": user, "all": "true" if all_users else None}
    with Client.from_environment() as client:
        tokens = client.get_list(TOKENS, params)
    if as_json:
        output.print_json(tokens)
        return
    output.print_table(
        ["ID", "NAME", "USER", "CREATED", "EXPIRES", "LAST USED", "STATE"],
        [
            [
                str(t.get("id", "")),
                str(t.get("name") or output.NONE),
                str(t.get("user", "")),
                output.timestamp(t.get("created_at")),
                output.timestamp(t.get("expires_at")) if t.get("expires_at") else "never",
                output.timestamp(t.get("last_used_at")) if t.get("last_used_at") else "never",
                "revoked" if t.get("revoked_at") else "active",
            ]
            for t in tokens
        ],
    )


def revoke_token(token_id: Annotated[int, typer.Argument(help="Token id (token list).")]) -> None:
    """Revoke a token: the next request with it is refused."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{TOKENS}/{token_id}")
    output.echo_err(f"token {token_id} revoked")


def disable_user(name: UserName) -> None:
    """A disabled user cannot log in; its running work goes on (admins)."""
    _post(f"{USERS}/{segment(name)}/disable", f"user {name} disabled")


def enable_user(name: UserName) -> None:
    """Let a disabled user log in again (admins)."""
    _post(f"{USERS}/{segment(name)}/enable", f"user {name} enabled")


def delete_user(name: UserName) -> None:
    """Delete a user without live work; its past jobs stay for accounting (admins)."""
    with Client.from_environment() as client:
        client.request("DELETE", f"{USERS}/{segment(name)}")
    output.echo_err(f"user {name} deleted")


def remove_member(
    name: UserName,
    tenant: Annotated[str, typer.Option(help="The tenant to take the user out of.")],
) -> None:
    """Take a user out of a tenant (its owners, or admins)."""
    validate.name(tenant, "--tenant")
    with Client.from_environment() as client:
        client.request("DELETE", f"{USERS}/{segment(name)}/membership/{segment(tenant)}")
    output.echo_err(f"user {name} is no longer a member of {tenant}")


def disable_tenant(name: TenantName) -> None:
    """A disabled tenant takes no new jobs or clusters; what runs goes on (admins)."""
    _post(f"{TENANTS}/{segment(name)}/disable", f"tenant {name} disabled")


def enable_tenant(name: TenantName) -> None:
    """Let a disabled tenant submit again (admins)."""
    _post(f"{TENANTS}/{segment(name)}/enable", f"tenant {name} enabled")


def delete_tenant(
    name: TenantName,
    force: Annotated[
        bool, typer.Option("--force", help="Cancel its jobs and delete its clusters first.")
    ] = False,
) -> None:
    """Delete a tenant; refused while it has live work, unless --force (admins)."""
    with Client.from_environment() as client:
        client.request(
            "DELETE", f"{TENANTS}/{segment(name)}", params={"force": "true" if force else None}
        )
    output.echo_err(f"tenant {name} deleted" + (" (its work is being cancelled)" if force else ""))


def _post(path: str, done: str) -> None:
    with Client.from_environment() as client:
        client.post_object(path)
    output.echo_err(done)
