"""Tenants, their members, roles and quotas."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from virtuai.domain.resources import Resources
from virtuai.errors import InvalidRequest

# Names of tenants, users, jobs and virtual clusters follow DNS-label rules so
# that they can become hostnames, Unix user names and path components safely.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_MAX = 63


def validate_name(value: str, *, field: str = "name") -> str:
    if not NAME_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field} {value!r} is not a valid name: use 1-63 lower-case letters, digits and "
            "'-', starting and ending with a letter or digit",
            field=field,
        )
    return value


class Role(enum.StrEnum):
    """A user's role in one tenant. Platform administrators are a separate flag."""

    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def can_submit(self) -> bool:
        return self in (Role.OWNER, Role.MEMBER)

    @property
    def can_manage_members(self) -> bool:
        return self is Role.OWNER


@dataclass(frozen=True, slots=True)
class Quota:
    """Hard limits on what a tenant may hold at once; ``None`` means unlimited."""

    cpu_milli: int | None = None
    memory: int | None = None
    gpu: int | None = None

    def limit_of(self, name: str) -> int | None:
        return {"cpu": self.cpu_milli, "memory": self.memory, "gpu": self.gpu}[name]

    def exceeded_by(self, request: Resources) -> list[str]:
        """Names of the limits that ``request`` is over."""
        over = []
        for name in ("cpu", "memory", "gpu"):
            limit = self.limit_of(name)
            if limit is not None and request.amount(name) > limit:
                over.append(name)
        return over


ANY_POOL = "*"  # the pool key of a tenant-wide quota entry (all pools together)


@dataclass(frozen=True, slots=True)
class PoolQuota:
    """A tenant's quota in one pool (or over all pools: ``ANY_POOL``), with cohort limits.

    The semantics are Kueue's ClusterQueue quotas (see ``docs/scheduling.md``):

    - ``nominal``: what the tenant is guaranteed in the pool (``None``: unlimited);
    - ``borrowing_limit``: how much *more* than nominal it may hold by borrowing
      unused nominal quota of its cohort (``None``: as much as the cohort lends);
    - ``lending_limit``: how much of its *unused* nominal quota cohort members may
      borrow (``None``: all of it).

    Without a cohort the two limits have no effect and ``nominal`` is a plain hard limit.
    """

    pool: str = ANY_POOL
    nominal: Quota = Quota()
    borrowing_limit: Quota = Quota()
    lending_limit: Quota = Quota()


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    quota: Quota
    weight: float = 1.0
    # Tenants in one cohort may later borrow each other's unused quota.
    cohort: str | None = None
