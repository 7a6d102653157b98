"""Who is calling, and what they may do. Every service function takes a ``Caller``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVarTuple

from sqlalchemy import Select

from virtuai.domain.tenancy import Role
from virtuai.errors import Forbidden, InvalidRequest, NotFound
from virtuai.store.models import TenantRow

Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    name: str
    is_admin: bool = False
    roles: Mapping[str, Role] = field(default_factory=dict)

    def role_in(self, tenant: str) -> Role | None:
        return self.roles.get(tenant)

    def can_see(self, tenant: str) -> bool:
        return self.is_admin or tenant in self.roles

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"only administrators can {action}")

    def require_visible(self, tenant: str, what: str = "tenant") -> None:
        """Unknown and foreign look the same: both answer 404, so ids do not leak."""
        if not self.can_see(tenant):
            raise NotFound(f"{what} {tenant!r} not found", field="tenant")

    def require_submit(self, tenant: str) -> None:
        self.require_visible(tenant)
        role = self.role_in(tenant)
        if self.is_admin and role is None:
            return
        if role is None or not role.can_submit:
            raise Forbidden(f"viewers of tenant {tenant!r} cannot submit or cancel work")

    def require_owner(self, tenant: str, action: str) -> None:
        self.require_visible(tenant)
        if self.is_admin:
            return
        if self.role_in(tenant) is not Role.OWNER:
            raise Forbidden(f"only owners of tenant {tenant!r} or administrators can {action}")

    def default_tenant(self, requested: str | None) -> str:
        """The tenant a request is for: the one named, else the caller's only tenant."""
        if requested is not None:
            return requested
        submit_tenants = sorted(t for t, r in self.roles.items() if r.can_submit)
        if len(submit_tenants) == 1:
            return submit_tenants[0]
        if not submit_tenants and len(self.roles) == 1:
            return next(iter(self.roles))  # a viewer: authorisation will say no, precisely
        if not submit_tenants:
            raise InvalidRequest("you are not a member of any tenant: name one", field="tenant")
        raise InvalidRequest(
            f"you are a member of several tenants ({', '.join(submit_tenants)}): name one",
            field="tenant",
        )


def scoped_to_tenants(query: Select[*Ts], caller: Caller, tenant: str | None) -> Select[*Ts]:
    """``query`` (which joins ``TenantRow``) limited to ``tenant``, or to every tenant the
    caller may see.  Naming a tenant one cannot see answers 404, as everywhere."""
    if tenant is not None:
        caller.require_visible(tenant)
        return query.where(TenantRow.name == tenant)
    if not caller.is_admin:
        return query.where(TenantRow.name.in_(list(caller.roles)))
    return query
