"""Turning credentials into a ``Caller``: API tokens from the database, JWTs from OIDC."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, selectinload

from virtuai.auth.identity import Identity
from virtuai.auth.tokens import hash_token, new_token
from virtuai.domain.tenancy import Role
from virtuai.errors import Unauthenticated
from virtuai.services.access import Caller
from virtuai.store.models import ApiTokenRow, MembershipRow, TenantRow, UserRow

# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
_LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def caller_from_user(user: UserRow) -> Caller:
    roles = {m.tenant.name: Role(m.role) for m in user.memberships}
    return Caller(user_id=user.id, name=user.name, is_admin=user.is_admin, roles=roles)


def load_user(session: Session, user_id: int) -> UserRow:
    user = session.scalars(
        select(UserRow)
        .where(UserRow.id == user_id)
        .options(selectinload(UserRow.memberships).selectinload(MembershipRow.tenant))
    ).one()
    return user


def caller_for_token_hash(session: Session, token_hash: str) -> tuple[Caller, dt.datetime | None]:
    """Who holds the token with this hash, and when it was last recorded as used; reads only."""
    found = session.execute(
        select(ApiTokenRow.user_id, ApiTokenRow.last_used_at).where(
            ApiTokenRow.token_hash == token_hash
        )
    ).one_or_none()
    if found is None:
        raise Unauthenticated("invalid token")
    return caller_from_user(load_user(session, found.user_id)), found.last_used_at


def needs_touch(last_used_at: dt.datetime | None, now: dt.datetime) -> bool:
    return last_used_at is None or now - last_used_at > _LAST_USED_RESOLUTION


def touch_token(session: Session, token_hash: str, now: dt.datetime) -> None:
    """Record a use; a Core statement, so it is not taken for a change of who may do what."""
    session.connection().execute(
        update(ApiTokenRow.__table__)  # type: ignore[arg-type]
        .where(ApiTokenRow.__table__.c.token_hash == token_hash)
        .values(last_used_at=now)
    )


def authenticate_token(session: Session, token: str, now: dt.datetime) -> Caller:
    row = session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        raise Unauthenticated("invalid token")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        row.last_used_at = now
    return caller_from_user(load_user(session, row.user_id))


def authenticate_identity(session: Session, identity: Identity, now: dt.datetime) -> Caller:
    """Provision the user on first sight and make its memberships match the token's groups.

    The identity provider is the source of truth for OIDC users: roles not in
    the token are removed, so leaving a group at the provider revokes access.
    """
    user = session.scalars(select(UserRow).where(UserRow.name == identity.username)).one_or_none()
    if user is None:
        user = UserRow(
            name=identity.username, is_admin=identity.is_admin, source="oidc", created_at=now
        )
        session.add(user)
        session.flush()
    elif user.source != "oidc":
        raise Unauthenticated(
            f"user {identity.username!r} is a local user; it cannot log in through OIDC"
        )
    user.is_admin = identity.is_admin
    tenants = {
        t.name: t
        for t in session.scalars(
            select(TenantRow).where(TenantRow.name.in_(list(identity.tenant_roles)))
        )
    }
    wanted = {
        tenants[name].id: role for name, role in identity.tenant_roles.items() if name in tenants
    }
    session.execute(
        delete(MembershipRow).where(
            MembershipRow.user_id == user.id, MembershipRow.tenant_id.not_in(list(wanted))
        )
    )
    current = {
        m.tenant_id: m
        for m in session.scalars(select(MembershipRow).where(MembershipRow.user_id == user.id))
    }
    for tenant_id, role in wanted.items():
        if tenant_id in current:
            current[tenant_id].role = role.value
        else:
            session.add(MembershipRow(user_id=user.id, tenant_id=tenant_id, role=role.value))
    session.flush()
    session.expire(user)
    return caller_from_user(load_user(session, user.id))


def issue_token(session: Session, user: UserRow, now: dt.datetime, description: str = "") -> str:
    """Create a token for ``user``; the plain token is returned once and never stored."""
    token = new_token()
    session.add(
        ApiTokenRow(
            user_id=user.id, token_hash=hash_token(token), description=description, created_at=now
        )
    )
    return token
