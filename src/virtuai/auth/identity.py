"""Who is calling: the result of authenticating a request, whatever the credential.

An :class:`Identity` is built by the OIDC verifier from a JWT, or by the API
layer from an API token and the memberships stored for its user.  It says who
the caller is and what it may do; it is not a database row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from virtuai.domain.tenancy import Role

# Strength of the roles, for when one user holds several roles in one tenant.
ROLE_RANK: dict[Role, int] = {Role.VIEWER: 1, Role.MEMBER: 2, Role.OWNER: 3}


def strongest_role(roles: Iterable[Role]) -> Role | None:
    """The strongest of ``roles`` (owner > member > viewer), or None if there are none."""
    return max(roles, key=ROLE_RANK.__getitem__, default=None)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    ``tenant_roles`` maps a tenant name to the caller's role in it; a tenant
    that is absent means no access.  ``is_admin`` is the platform-wide
    administrator flag, separate from any tenant role.  ``source`` says how
    the caller authenticated: ``"oidc"`` (a JWT) or ``"token"`` (an API token).
    """

    username: str
    is_admin: bool
    tenant_roles: dict[str, Role] = field(default_factory=dict)
    source: str = "oidc"

    def __post_init__(self) -> None:
        # Own a private copy: the caller's dict must not change a frozen identity.
        object.__setattr__(self, "tenant_roles", dict(self.tenant_roles))

    def role_in(self, tenant: str) -> Role | None:
        """The caller's role in ``tenant``, or None if it has none (admins included)."""
        return self.tenant_roles.get(tenant)
