"""What each tenant of a cohort borrows and lends, for people to read (``virtuai quota``).

The scheduler enforces the limits; this only accounts.  A tenant borrows what
it uses above its nominal quota.  What the cohort borrows in total is
attributed to the members that have unused nominal quota to lend, in
proportion to how much each can lend (its unused nominal, capped by its
lending limit): the cohort's quota is one pool, so no borrowed unit comes from
one particular lender.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from virtuai.domain.resources import RESOURCE_NAMES, Resources
from virtuai.domain.tenancy import PoolQuota


@dataclass(frozen=True, slots=True)
class QuotaAccount:
    used: Resources
    borrowed: Resources
    lent: Resources


def cohort_accounts(members: Mapping[str, tuple[PoolQuota, Resources]]) -> dict[str, QuotaAccount]:
    """``members``: tenant -> (its quota entry in one pool, what it uses there)."""
    borrowed = {t: _above(used, quota) for t, (quota, used) in members.items()}
    lendable = {t: _lendable(quota, used) for t, (quota, used) in members.items()}
    # A borrower has nothing unused to lend of what it borrows, so the totals need no
    # "other than itself": every borrowed unit comes from the lendable of others.
    taken = {n: sum(b.amount(n) for b in borrowed.values()) for n in RESOURCE_NAMES}
    offered = {n: sum(v.amount(n) for v in lendable.values()) for n in RESOURCE_NAMES}
    accounts: dict[str, QuotaAccount] = {}
    for tenant, (_, used) in members.items():
        lent: dict[str, int] = {}
        for name in RESOURCE_NAMES:
            mine = lendable[tenant].amount(name)
            share = taken[name] * mine // offered[name] if offered[name] else 0
            lent[name] = min(mine, share)
        accounts[tenant] = QuotaAccount(
            used=used,
            borrowed=borrowed[tenant],
            lent=Resources(lent["cpu"], lent["memory"], lent["gpu"]),
        )
    return accounts


def _above(used: Resources, quota: PoolQuota) -> Resources:
    values = []
    for name in RESOURCE_NAMES:
        nominal = quota.nominal.limit_of(name)
        values.append(0 if nominal is None else max(0, used.amount(name) - nominal))
    return Resources(*values)


def _lendable(quota: PoolQuota, used: Resources) -> Resources:
    values = []
    for name in RESOURCE_NAMES:
        nominal = quota.nominal.limit_of(name)
        if nominal is None:
            values.append(0)  # an unlimited tenant has no quota of its own to lend
            continue
        unused = max(0, nominal - used.amount(name))
        cap = quota.lending_limit.limit_of(name)
        values.append(unused if cap is None else min(unused, cap))
    return Resources(*values)
