"""Users, their memberships and their API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from virtuai.domain.tenancy import Role, validate_name
from virtuai.errors import Conflict, Forbidden, NotFound
from virtuai.services.access import Caller
from virtuai.services.identity import find_user, issue_token, load_user
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
    tenant_row = None if tenant is None else get_tenant_row(session, tenant)
    user = UserRow(
        name=name,
        is_admin=admin,
        source="local",
        created_at=now,
        home_tenant_id=None if tenant_row is None else tenant_row.id,
    )
    session.add(user)
    session.flush()
    if tenant_row is not None:
        session.add(MembershipRow(user_id=user.id, tenant_id=tenant_row.id, role=role.value))
    token = issue_token(session, user, now, description="created with the user")
    session.flush()
    return load_user(session, user.id), token


def set_membership(session: Session, caller: Caller, name: str, tenant: str, role: Role) -> UserRow:
    """Give a user a role in a tenant.

    Owners act only on users who belong to their tenant already, or whom an
    administrator created for it; anyone else answers 404 exactly like a
    missing user, so an owner learns nothing of other tenants' users.
    """
    caller.require_owner(tenant, "change its members")
    tenant_row = get_tenant_row(session, tenant)
    user = _member_or_home(session, caller, name, tenant_row.id)
    membership = session.get(MembershipRow, (user.id, tenant_row.id))
    if membership is None:
        session.add(MembershipRow(user_id=user.id, tenant_id=tenant_row.id, role=role.value))
    else:
        membership.role = role.value
    session.flush()
    session.expire(user)
    return load_user(session, user.id)


def remove_membership(session: Session, caller: Caller, name: str, tenant: str) -> UserRow:
    """Take a user out of a tenant (owners of it, or administrators); its past work stays."""
    caller.require_owner(tenant, "change its members")
    tenant_row = get_tenant_row(session, tenant)
    user = _member_or_home(session, caller, name, tenant_row.id)
    membership = session.get(MembershipRow, (user.id, tenant_row.id))
    if membership is None:
        raise NotFound(f"user {name!r} is not a member of tenant {tenant!r}", field="name")
    session.delete(membership)
    session.flush()
    session.expire(user)
    return load_user(session, user.id)


def _member_or_home(session: Session, caller: Caller, name: str, tenant_id: int) -> UserRow:
    user = _get_user(session, name)
    if caller.is_admin:
        return user
    if user.home_tenant_id == tenant_id:
        return user
    if session.get(MembershipRow, (user.id, tenant_id)) is not None:
        return user
    raise NotFound(f"user {name!r} not found", field="name")


def list_users(session: Session, caller: Caller) -> list[UserRow]:
    caller.require_admin("list all users")
    return list(
        session.scalars(
            select(UserRow)
            .where(UserRow.deleted_at.is_(None))
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
    return find_user(session, name)
