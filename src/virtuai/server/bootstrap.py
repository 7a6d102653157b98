"""First start: an administrator, its token printed once, and a CLI config that works at once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.services.identity import issue_token
from virtuai.store.db import transaction
from virtuai.store.models import UserRow

ADMIN_NAME = "admin"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    admin: str
    token: str


def bootstrap_admin(sessions: sessionmaker[Session], clock: Clock) -> Bootstrap | None:
    """Create the first administrator when there is no user at all; else do nothing.

    Safe when two servers start at once (several machines on one database): the user
    name is unique, so the loser's transaction fails, nothing is half-created, and the
    loser goes on as if the administrator had existed already.
    """
    try:
        with transaction(sessions) as session:
            if session.scalars(select(UserRow.id).limit(1)).first() is not None:
                return None
            now = clock.now()
            admin = UserRow(name=ADMIN_NAME, is_admin=True, source="local", created_at=now)
            session.add(admin)
            session.flush()
            token = issue_token(session, admin, now, description="bootstrap")
    except IntegrityError:
        return None
    return Bootstrap(ADMIN_NAME, token)
