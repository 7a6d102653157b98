from __future__ import annotations

from virtuai.domain.cohorts import cohort_accounts
from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import PoolQuota, Quota


def cpu(n: int) -> Resources:
    return Resources(cpu_milli=n * 1000)


def quota(nominal: int, lending: int | None = None) -> PoolQuota:
    return PoolQuota(
        nominal=Quota(cpu_milli=nominal * 1000),
        lending_limit=Quota(cpu_milli=None if lending is None else lending * 1000),
    )


def test_borrowed_is_use_above_nominal_and_lent_is_shared_by_what_each_can_lend() -> None:
    accounts = cohort_accounts(
        {
            "physics": (quota(8), cpu(12)),  # borrows 4
            "biology": (quota(8), cpu(0)),  # can lend 8
            "chemistry": (quota(8, lending=0), cpu(0)),  # lends nothing
            "maths": (quota(8), cpu(0)),  # can lend 8
        }
    )
    assert accounts["physics"].borrowed == cpu(4)
    assert accounts["physics"].lent == cpu(0)
    assert accounts["biology"].lent == cpu(2) == accounts["maths"].lent
    assert accounts["chemistry"].lent == cpu(0)
    assert sum(a.lent.cpu_milli for a in accounts.values()) == 4000


def test_nobody_borrows_nobody_lends() -> None:
    accounts = cohort_accounts({"a": (quota(4), cpu(1)), "b": (quota(4), cpu(4))})
    assert all(a.borrowed == a.lent == Resources() for a in accounts.values())
