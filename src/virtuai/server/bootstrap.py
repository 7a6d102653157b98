"""First start: an administrator, its token printed once, and a CLI config that works at once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
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

    Safe when two servers start at once: the user name is unique, so the
    loser's transaction fails and nothing is half-created.
    """
    with transaction(sessions) as session:
        if session.scalars(select(UserRow.id).limit(1)).first() is not None:
            return None
        now = clock.now()
        admin = UserRow(name=ADMIN_NAME, is_admin=True, source="local", created_at=now)
        session.add(admin)
        session.flush()
        token = issue_token(session, admin, now, description="bootstrap")
    return Bootstrap(ADMIN_NAME, token)
