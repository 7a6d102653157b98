"""Users, their memberships and their API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from virtuai.domain.tenancy import Role, validate_name
from virtuai.errors import Conflict, Forbidden, NotFound
from virtuai.services.access import Caller
from virtuai.services.identity import issue_token, load_user
from virtuai.store.models import MembershipRow, UserRow
from virtuai.store.tenancy import get_tenant_row


def create_user(
    session: Session,
    caller: Caller,
    name: str,
    tenant: str | None,
    role: Role,
    admin: bool,
    now: dt.datetime,
) -> tuple[UserRow, str]:
    """Create a local user (optionally in a tenant) and return it with its first token."""
    validate_name(name, field="name")
    if admin or tenant is None:
        caller.require_admin("create administrators or users outside a tenant")
    else:
        caller.require_owner(tenant, "add users to it")
    if session.scalars(select(UserRow.id).where(UserRow.name == name)).first() is not None:
        raise Conflict(f"user {name!r} already exists", field="name")
    user = UserRow(name=name, is_admin=admin, source="local", created_at=now)
    session.add(user)
    session.flush()
    if tenant is not None:
        tenant_row = get_tenant_row(session, tenant)
        session.add(MembershipRow(user_id=user.id, tenant_id=tenant_row.id, role=role.value))
    token = issue_token(session, user, now, description="created with the user")
    session.flush()
    return load_user(session, user.id), token


def set_membership(session: Session, caller: Caller, name: str, tenant: str, role: Role) -> UserRow:
    caller.require_owner(tenant, "change its members")
    user = _get_user(session, name)
    tenant_row = get_tenant_row(session, tenant)
    membership = session.get(MembershipRow, (user.id, tenant_row.id))
    if membership is None:
        session.add(MembershipRow(user_id=user.id, tenant_id=tenant_row.id, role=role.value))
    else:
        membership.role = role.value
    session.flush()
    session.expire(user)
    return load_user(session, user.id)


def list_users(session: Session, caller: Caller) -> list[UserRow]:
    caller.require_admin("list all users")
    return list(
        session.scalars(
            select(UserRow)
            .order_by(UserRow.name)
            .options(selectinload(UserRow.memberships).selectinload(MembershipRow.tenant))
        )
    )


def new_token_for(session: Session, caller: Caller, name: str, now: dt.datetime) -> str:
    if name != caller.name and not caller.is_admin:
        raise Forbidden("only administrators can make tokens for other users")
    user = _get_user(session, name)
    if user.source != "local":
        raise Conflict(f"user {name!r} logs in through OIDC and has no API tokens", field="name")
    return issue_token(session, user, now, description=f"issued by {caller.name}")


def _get_user(session: Session, name: str) -> UserRow:
    user = session.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
    if user is None:
        raise NotFound(f"user {name!r} not found", field="name")
    return user
