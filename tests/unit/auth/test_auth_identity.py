from __future__ import annotations

import dataclasses

import pytest

from virtuai import auth
from virtuai.auth.identity import Identity, strongest_role
from virtuai.domain.tenancy import Role


def test_public_api_is_all() -> None:
    assert sorted(auth.__all__) == sorted(
        ["Identity", "OidcVerifier", "hash_token", "looks_like_api_token", "new_token"]
    )
    for name in auth.__all__:
        assert getattr(auth, name) is not None
    assert auth.__doc__


def test_identity_is_frozen_and_owns_its_roles() -> None:
    roles = {"physics": Role.MEMBER}
    ident = Identity(username="alice", is_admin=False, tenant_roles=roles)
    roles["physics"] = Role.OWNER
    assert ident.role_in("physics") is Role.MEMBER
    assert ident.role_in("chemistry") is None
    assert ident.source == "oidc"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.username = "mallory"  # type: ignore[misc]


def test_strongest_role() -> None:
    assert strongest_role([Role.VIEWER, Role.OWNER, Role.MEMBER]) is Role.OWNER
    assert strongest_role([Role.VIEWER, Role.MEMBER]) is Role.MEMBER
    assert strongest_role([]) is None
