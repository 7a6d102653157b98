"""Turning credentials into a ``Caller``: API tokens from the database, JWTs from OIDC."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, selectinload

from virtuai.auth.identity import Identity
from virtuai.auth.tokens import hash_token, new_token
from virtuai.domain.tenancy import Role
from virtuai.errors import NotFound, Unauthenticated
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


@dataclass(frozen=True, slots=True)
class TokenHolder:
    caller: Caller
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None


def caller_for_token_hash(session: Session, token_hash: str, now: dt.datetime) -> TokenHolder:
    """Who holds the live token with this hash, and its last use and expiry; reads only.

    Revoked and expired tokens, and tokens of disabled or deleted users, are refused.
    """
    found = session.execute(
        select(
            ApiTokenRow.user_id,
            ApiTokenRow.last_used_at,
            ApiTokenRow.revoked_at,
            ApiTokenRow.expires_at,
        ).where(ApiTokenRow.token_hash == token_hash)
    ).one_or_none()
    if found is None:
        raise Unauthenticated("invalid token")
    if found.revoked_at is not None:
        raise Unauthenticated("this token was revoked")
    if found.expires_at is not None and found.expires_at <= now:
        raise Unauthenticated("this token has expired: make a new one (virtuai token create)")
    user = load_user(session, found.user_id)
    require_enabled(user)
    return TokenHolder(caller_from_user(user), found.last_used_at, found.expires_at)


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
    """The caller holding ``token``, its use recorded (at most once a minute)."""
    digest = hash_token(token)
    holder = caller_for_token_hash(session, digest, now)
    if needs_touch(holder.last_used_at, now):
        touch_token(session, digest, now)
    return holder.caller


def require_enabled(user: UserRow) -> None:
    """Disabled and deleted users cannot authenticate, whatever their credential."""
    if user.deleted_at is not None:
        raise Unauthenticated("invalid token")
    if user.disabled_at is not None:
        raise Unauthenticated(f"user {user.name!r} is disabled; ask an administrator")


def find_user(session: Session, name: str, *, field: str = "name") -> UserRow:
    """A user that exists and is not deleted, else ``NotFound``."""
    user = session.scalars(
        select(UserRow).where(UserRow.name == name, UserRow.deleted_at.is_(None))
    ).one_or_none()
    if user is None:
        raise NotFound(f"user {name!r} not found", field=field)
    return user


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
    require_enabled(user)
    user.is_admin = identity.is_admin
    tenants = {
        t.name: t
        for t in session.scalars(
            select(TenantRow).where(
                TenantRow.name.in_(list(identity.tenant_roles)), TenantRow.deleted_at.is_(None)
            )
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
    return create_token(session, user, now, description=description)[1]


def create_token(
    session: Session,
    user: UserRow,
    now: dt.datetime,
    *,
    name: str | None = None,
    expires_at: dt.datetime | None = None,
    description: str = "",
) -> tuple[ApiTokenRow, str]:
    """A new token row and the plain token, which is returned once and never stored."""
    token = new_token()
    row = ApiTokenRow(
        user_id=user.id,
        token_hash=hash_token(token),
        description=description[:200],
        name=name,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, token
