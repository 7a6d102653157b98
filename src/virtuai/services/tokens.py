"""API tokens with a life cycle: named, expiring, revoked, their last use recorded.

A token is shown once, when it is made; only its SHA-256 is stored
(``auth/tokens.py`` says why that is enough).  Expiry and revocation are checked
at every request (``services.identity.authenticate_token``), so both take effect
at once.  Users manage their own tokens; administrators manage anyone's.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.units import parse_duration
from virtuai.errors import Conflict, Forbidden, InvalidRequest, NotFound
from virtuai.services.access import Caller
from virtuai.services.identity import create_token, find_user
from virtuai.store.models import ApiTokenRow, UserRow

MAX_TOKEN_NAME = 100


def new_token(
    session: Session,
    caller: Caller,
    name: str | None,
    expires: str | None,
    now: dt.datetime,
    user: str | None = None,
) -> tuple[ApiTokenRow, str]:
    """A token for the caller (or, for administrators, for ``user``)."""
    owner = _owner(session, caller, user)
    if owner.source != "local":
        raise Conflict(
            f"user {owner.name!r} logs in through OIDC and has no API tokens", field="user"
        )
    if name is not None and (not name.strip() or len(name) > MAX_TOKEN_NAME or "\x00" in name):
        raise InvalidRequest(
            f"name: 1 to {MAX_TOKEN_NAME} characters, without NUL bytes", field="name"
        )
    expires_at = (
        None
        if expires is None
        else now + dt.timedelta(seconds=parse_duration(expires, field="expires"))
    )
    return create_token(
        session, owner, now, name=name, expires_at=expires_at, description=f"by {caller.name}"
    )


def list_tokens(
    session: Session, caller: Caller, user: str | None = None, everyone: bool = False
) -> list[tuple[ApiTokenRow, str]]:
    """Tokens with their owner's name: the caller's, one user's, or everyone's (admins)."""
    query = select(ApiTokenRow, UserRow.name).join(UserRow).order_by(ApiTokenRow.id)
    if everyone:
        caller.require_admin("list everyone's tokens")
        query = query.where(UserRow.deleted_at.is_(None))
    else:
        query = query.where(ApiTokenRow.user_id == _owner(session, caller, user).id)
    return [(row, name) for row, name in session.execute(query).all()]


def revoke_token(session: Session, caller: Caller, token_id: int, now: dt.datetime) -> None:
    """Revoke at once; revoking a revoked token again changes nothing."""
    row = session.get(ApiTokenRow, token_id)
    if row is None or (row.user_id != caller.user_id and not caller.is_admin):
        raise NotFound(f"token {token_id} not found", field="id")  # others' look missing
    if row.revoked_at is None:
        row.revoked_at = now
    session.flush()


def _owner(session: Session, caller: Caller, user: str | None) -> UserRow:
    if user is None or user == caller.name:
        owner = session.get(UserRow, caller.user_id)
        assert owner is not None
        return owner
    if not caller.is_admin:
        raise Forbidden("only administrators manage other users' tokens")
    return find_user(session, user, field="user")
