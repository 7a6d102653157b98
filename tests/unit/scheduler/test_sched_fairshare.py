"""Fair share: decay, the factor sshare prints, and the queue order it gives."""

from __future__ import annotations

import math

import pytest
from sched_builders import job, member, node, res, run, world

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota
from virtuai.scheduler import FairShare, accrue, cluster_capacity, fair_share, schedule
from virtuai.scheduler.fairshare import ShareTracker, decay, decayed
from virtuai.scheduler.snapshot import HistoricalUsage, NodeState, Policy, TenantState

DAY = 86400.0
WEEK = 7 * DAY
TAU = WEEK / math.log(2)  # what a resource delivers over a decayed infinite past, per unit
CAPACITY = res(cpu=100, memory="100Gi")
FAIR_ONLY = Policy(fair_share=True)


def cpu_history(fraction: float, as_of: float = 0.0) -> HistoricalUsage:
    """Decayed usage of ``fraction`` of CAPACITY's cpu held forever."""
    return HistoricalUsage(cpu_milli_s=fraction * CAPACITY.cpu_milli * TAU, as_of=as_of)


def by_name(rows: tuple[FairShare, ...]) -> dict[str, FairShare]:
    return {row.tenant: row for row in rows}


def test_decay_halves_every_half_life() -> None:
    assert decay(WEEK, WEEK) == 0.5
    assert decay(2 * WEEK, WEEK) == 0.25
    assert decay(0, WEEK) == 1.0
    assert decay(-5, WEEK) == 1.0  # never forwards
    h = decayed(HistoricalUsage(100.0, 10.0, 4.0, as_of=0.0), WEEK, WEEK)
    assert (h.cpu_milli_s, h.memory_s, h.gpu_s, h.as_of) == (50.0, 5.0, 2.0, WEEK)


def test_accrue_integrates_the_decay_exactly() -> None:
    # Holding 1 gpu for one half-life is worth tau * (1 - 1/2) at its end.
    h = accrue(HistoricalUsage(), Resources(gpu=1), 0.0, WEEK, WEEK)
    assert h.gpu_s == pytest.approx(TAU / 2)
    assert h.as_of == WEEK
    # The same in two halves, in either order, gives the same value.
    a = accrue(accrue(HistoricalUsage(), Resources(gpu=1), 0, WEEK / 2, WEEK), Resources(gpu=1),
               WEEK / 2, WEEK, WEEK)  # fmt: skip
    b = accrue(accrue(HistoricalUsage(), Resources(gpu=1), WEEK / 2, WEEK, WEEK), Resources(gpu=1),
               0, WEEK / 2, WEEK)  # fmt: skip
    assert a.gpu_s == pytest.approx(h.gpu_s)
    assert b.gpu_s == pytest.approx(h.gpu_s)
    # Held forever, a fraction f of the cluster counts as f.
    forever = accrue(HistoricalUsage(), Resources(gpu=1), -1000 * WEEK, 0.0, WEEK)
    assert forever.gpu_s == pytest.approx(TAU)


def test_more_decayed_usage_gives_the_lower_factor() -> None:
    tenants = [
        TenantState("physics", Quota(), history=cpu_history(0.4)),
        TenantState("chemistry", Quota(), history=cpu_history(0.1)),
    ]
    rows = by_name(fair_share(tenants, CAPACITY, now=0.0, allocation_weight=0.0))
    physics, chemistry = rows["physics"], rows["chemistry"]
    assert physics.factor < chemistry.factor
    assert physics.usage == pytest.approx(0.4)
    assert physics.norm_shares == 0.5
    assert physics.factor == pytest.approx(2 ** (-0.4 / 0.5))
    assert physics.dominant == "cpu"


def test_factor_is_one_without_usage_and_one_half_at_exactly_the_share() -> None:
    tenants = [
        TenantState("idle", Quota()),
        TenantState("busy", Quota(), usage=res(cpu=50)),  # half the cluster, half the shares
    ]
    rows = by_name(fair_share(tenants, CAPACITY, now=0.0, allocation_weight=1.0))
    assert rows["idle"].factor == 1.0
    assert rows["busy"].factor == pytest.approx(0.5)


def test_usage_is_forgotten_with_the_half_life() -> None:
    old = TenantState("physics", Quota(), history=cpu_history(0.4, as_of=0.0))
    row = fair_share([old], CAPACITY, now=WEEK, allocation_weight=0.0)[0]
    assert row.usage == pytest.approx(0.2)
    assert row.history.as_of == WEEK


def test_weight_scales_the_share() -> None:
    tenants = [
        TenantState("big", Quota(), weight=3.0, history=cpu_history(0.3)),
        TenantState("small", Quota(), weight=1.0, history=cpu_history(0.1)),
    ]
    rows = by_name(fair_share(tenants, CAPACITY, now=0.0, allocation_weight=0.0))
    # Same usage per share: the same factor.
    assert rows["big"].factor == pytest.approx(rows["small"].factor)
    assert rows["big"].norm_shares == 0.75


def test_dominant_resource_is_the_largest_share() -> None:
    t = TenantState("gpu-heavy", Quota(), usage=res(cpu=1, memory="1Gi", gpu=4))
    capacity = res(cpu=100, memory="100Gi", gpu=8)
    row = fair_share([t], capacity, now=0.0, allocation_weight=1.0)[0]
    assert row.dominant == "gpu"
    assert row.usage == 0.5


def test_zero_weight_gets_factor_zero_and_capacity_counts_usable_gpus() -> None:
    row = fair_share([TenantState("t", Quota(), weight=0)], CAPACITY, now=0.0)[0]
    assert row.factor == 0.0
    n = node("g", cpu=8, gpus=2)
    assert cluster_capacity([NodeState(n)]) == res(cpu=8, memory="32Gi", gpu=2)


def test_an_admission_moves_the_ratio_asked_before_it() -> None:
    """``ShareTracker.ratio`` is remembered within a pass; ``add`` must move it."""
    tenants = [TenantState("a", Quota()), TenantState("b", Quota(), weight=3)]
    tracker = ShareTracker(tenants, {}, CAPACITY, now=0.0, half_life_s=WEEK, allocation_weight=1.0)
    assert tracker.ratio("a") == 0.0
    tracker.add("a", res(cpu=25))  # a quarter of the cluster, for a quarter share
    assert tracker.ratio("a") == pytest.approx(1.0)
    tracker.add("b", res(cpu=25))
    assert tracker.ratio("b") == pytest.approx(0.25 / 0.75)
    assert tracker.ratio("a") == pytest.approx(1.0)
    assert tracker.ratio("ghost") == math.inf


# --- order -------------------------------------------------------------------------------


def test_the_tenant_with_less_usage_goes_first_at_equal_priority() -> None:
    tenants = [
        member("heavy", cohort=None, history=cpu_history(0.5)),
        member("light", cohort=None, history=cpu_history(0.01)),
    ]
    jobs = [
        job("h", tenant="heavy", cpu=4, submitted_at=1.0),
        job("l", tenant="light", cpu=4, submitted_at=2.0),
    ]
    d = schedule(world([node("n1", cpu=4)], jobs, tenants, policy=FAIR_ONLY))
    assert [a.job_id for a in d.admitted] == ["l"]
    d = schedule(world([node("n1", cpu=4)], jobs, tenants, policy=Policy()))
    assert [a.job_id for a in d.admitted] == ["h"]  # v1: submission time


def test_priority_goes_before_fair_share() -> None:
    tenants = [
        member("heavy", cohort=None, history=cpu_history(0.5)),
        member("light", cohort=None),
    ]
    jobs = [job("h", tenant="heavy", cpu=4, priority=1000), job("l", tenant="light", cpu=4)]
    d = schedule(world([node("n1", cpu=4)], jobs, tenants, policy=FAIR_ONLY))
    assert [a.job_id for a in d.admitted] == ["h"]


def test_tenants_take_turns_within_one_pass() -> None:
    jobs = [job(f"a{i}", tenant="a", cpu=1, seq=i) for i in range(4)]
    jobs += [job(f"b{i}", tenant="b", cpu=1, seq=10 + i) for i in range(4)]
    tenants = [member("a", cohort=None), member("b", cohort=None)]
    d = schedule(world([node("n1", cpu=4)], jobs, tenants, policy=FAIR_ONLY))
    assert sorted(a.job_id for a in d.admitted) == ["a0", "a1", "b0", "b1"]


def test_running_work_counts_as_current_allocation() -> None:
    tenants = [member("a", cohort=None), member("b", cohort=None)]
    running = [run("ra", "n1", tenant="a", cpu=4)]
    jobs = [job("a1", tenant="a", cpu=2, seq=1), job("b1", tenant="b", cpu=2, seq=2)]
    d = schedule(world([node("n1", cpu=6)], jobs, tenants, running, policy=FAIR_ONLY))
    assert [a.job_id for a in d.admitted] == ["b1"]


def test_unknown_tenants_get_weight_one() -> None:
    jobs = [job("g", tenant="ghost", cpu=1), job("k", tenant="known", cpu=1)]
    d = schedule(world([node("n1", cpu=8)], jobs, [member("known", cohort=None)],
                       policy=FAIR_ONLY))  # fmt: skip
    assert sorted(a.job_id for a in d.admitted) == ["g", "k"]
