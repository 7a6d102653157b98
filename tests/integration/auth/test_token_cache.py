"""The token cache forgets as soon as who-may-do-what changes, and after its TTL."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.domain.tenancy import Role
from virtuai.services.access import Caller
from virtuai.services.tokencache import TokenCache
from virtuai.store.db import transaction
from virtuai.store.models import ApiTokenRow, MembershipRow

ADA = Caller(user_id=1, name="ada", roles={"physics": Role.MEMBER})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = TokenCache(ttl_s=2.0, monotonic=clock)
    cache.put("h", ADA, cache.generation())
    assert cache.get("h") == ADA
    clock.now += 2.5
    assert cache.get("h") is None


def test_a_committed_membership_change_empties_the_cache(
    session_factory: sessionmaker[Session],
) -> None:
    with transaction(session_factory) as session:
        team, ada = rows.tenant("physics"), rows.user("ada")
        session.add_all([team, ada])
        session.flush()
        session.add(MembershipRow(user_id=ada.id, tenant_id=team.id, role="member"))
        session.add(rows.api_token(ada))
    cache = TokenCache(ttl_s=60)
    cache.put("h", ADA, cache.generation())
    assert cache.get("h") == ADA
    with transaction(session_factory) as session:
        session.execute(delete(MembershipRow))  # a bulk statement counts as well
    assert cache.get("h") is None

    cache.put("h", ADA, cache.generation())
    with transaction(session_factory) as session:
        token = session.query(ApiTokenRow).one()
        session.delete(token)  # a revoked token
    assert cache.get("h") is None


def test_an_answer_read_while_a_change_commits_is_not_kept(
    session_factory: sessionmaker[Session],
) -> None:
    cache = TokenCache(ttl_s=60)
    generation = cache.generation()  # the reader starts...
    with transaction(session_factory) as session:  # ...a change commits meanwhile...
        session.add(rows.user("bob"))
    cache.put("h", ADA, generation)  # ...so what the reader read may be stale
    assert cache.get("h") is None


def test_changes_to_other_tables_keep_the_cache(session_factory: sessionmaker[Session]) -> None:
    with transaction(session_factory) as session:
        team, ada = rows.tenant("physics"), rows.user("ada")
        session.add_all([team, ada])
    cache = TokenCache(ttl_s=60)
    cache.put("h", ADA, cache.generation())
    with transaction(session_factory) as session:
        session.add(rows.job(ada, team))
    assert cache.get("h") == ADA


def test_an_entry_past_half_its_life_asks_to_be_read_again_never_used_after_the_ttl() -> None:
    clock = Clock()
    cache = TokenCache(ttl_s=2.0, monotonic=clock)
    cache.put("h", ADA, cache.generation())
    assert cache.lookup("h") == (ADA, False)
    clock.now += 1.5
    assert cache.lookup("h") == (ADA, True)  # still good; the proxy refreshes it meanwhile
    cache.put("h", ADA, cache.generation())
    assert cache.lookup("h") == (ADA, False)
    clock.now += 2.1
    assert cache.lookup("h") == (None, False)
    cache.put("h", ADA, cache.generation())
    cache.forget("h")  # a refresh found the token revoked
    assert cache.lookup("h") == (None, False)
