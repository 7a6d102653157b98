"""The jobs list pages back by id (``before_id``) and filters by user, in the caller's tenants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state


@pytest.fixture
def platform(session_factory: sessionmaker[Session]) -> Iterator[Platform]:
    state = public_dir("vai-state-")
    platform = Platform(session_factory, state, driver_settings=driver_settings_for_tests())
    yield platform
    remove_state(state, ["physics", "biology"])


def ids(platform: Platform, token: str | None = None, **params: object) -> list[int]:
    return [j["id"] for j in platform.ok("GET", "/api/v1/jobs", token, params=params)]


def test_pages_walk_back_by_id_and_users_filter(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("biology")
    alice = platform.user("alice", "physics")
    carl = platform.user("carl", "physics")
    bob = platform.user("bob", "biology")
    submitted = [platform.submit(t, ["true"])["id"] for t in (alice, carl, bob, alice, carl)]

    first = ids(platform, limit=2)
    assert first == sorted(submitted, reverse=True)[:2]
    second = ids(platform, limit=2, before_id=first[-1])
    third = ids(platform, limit=2, before_id=second[-1])
    assert first + second + third == sorted(submitted, reverse=True)

    assert ids(platform, user="alice") == [submitted[3], submitted[0]]
    # A member sees its tenant's jobs only, whoever it names.
    assert ids(platform, alice, user="bob") == []
    assert ids(platform, alice, user="carl") == [submitted[4], submitted[1]]
    assert ids(platform, user="nobody") == []


def test_bad_paging_values_name_the_field(platform: Platform) -> None:
    for value in ("0", "-1", "x", str(2**64)):
        response = platform.call("GET", "/api/v1/jobs", params={"before_id": value})
        assert response.status_code == 422, (value, response.text)
        assert response.json()["field"] == "before_id"
