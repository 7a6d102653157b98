"""Quota entries, cohorts, borrowing and lending limits, pools, and the never-fit ceiling."""

from __future__ import annotations

from dataclasses import replace

from sched_builders import FAIR, job, member, node, quota, res, run, world

from virtuai.domain.tenancy import PoolQuota, Quota
from virtuai.scheduler import never_reason, schedule
from virtuai.scheduler.snapshot import Blocked, BlockKind, Decisions, Policy, TenantState

FIFO = Policy()


def admitted(d: Decisions) -> list[str]:
    return [a.job_id for a in d.admitted]


def blocked(d: Decisions) -> dict[str, Blocked]:
    return {b.job_id: b for b in d.blocked}


def two(borrow: Quota = Quota(), lend: Quota = Quota()) -> list[TenantState]:  # noqa: B008
    """physics and chemistry, 4 cpu nominal each, in cohort science."""
    return [
        member("physics", nominal=quota(cpu=4), borrow=borrow),
        member("chemistry", nominal=quota(cpu=4), lend=lend),
    ]


PHYSICS_JOBS = [job(f"p{i}", cpu=2, seq=i) for i in range(4)]


def test_a_cohort_member_borrows_unused_nominal_quota() -> None:
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, two(), policy=FIFO))
    assert admitted(d) == ["p0", "p1", "p2", "p3"]


def test_borrowing_limit() -> None:
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, two(borrow=quota(cpu=2)), policy=FIFO))
    assert admitted(d) == ["p0", "p1", "p2"]
    assert blocked(d)["p3"].reason == (
        "waiting for quota: tenant physics uses 6 of 4 cpu, "
        "and may borrow at most 2 cpu more than that"
    )


def test_lending_limit() -> None:
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, two(lend=quota(cpu=2)), policy=FIFO))
    assert admitted(d) == ["p0", "p1", "p2"]
    assert blocked(d)["p3"].reason == (
        "waiting for quota: tenant physics uses 6 of 4 cpu; cohort science has 0 cpu to lend"
    )


def test_only_unused_quota_is_lent() -> None:
    # chemistry holds 3 of its 4 cpu: physics may borrow 1.
    tenants = two()
    running = [run("c", "n1", tenant="chemistry", cpu=3)]
    jobs = [job(f"p{i}", cpu=1, seq=i) for i in range(8)]
    d = schedule(world([node("n1", cpu=16)], jobs, tenants, running, policy=FIFO))
    assert len(d.admitted) == 5


def test_without_a_cohort_nominal_is_a_hard_limit() -> None:
    tenants = [member("physics", cohort=None, nominal=quota(cpu=4)), member("chemistry")]
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, tenants, policy=FIFO))
    assert admitted(d) == ["p0", "p1"]
    assert blocked(d)["p2"].reason == "waiting for quota: tenant physics uses 4 of 4 cpu"


def test_borrowing_can_be_switched_off() -> None:
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, two(), policy=Policy(borrowing=False)))
    assert admitted(d) == ["p0", "p1"]


def test_v1_tenant_wide_quota_is_the_nominal_quota_of_the_star_entry() -> None:
    tenants = [
        TenantState("physics", quota(cpu=4), cohort="science"),
        TenantState("chemistry", quota(cpu=4), cohort="science"),
    ]
    d = schedule(world([node("n1", cpu=8)], PHYSICS_JOBS, tenants, policy=FIFO))
    assert admitted(d) == ["p0", "p1", "p2", "p3"]


def test_a_lender_under_its_nominal_quota_is_told_its_quota_is_lent_out() -> None:
    running = [run(f"r{i}", "n1", cpu=2) for i in range(4)]  # physics borrows 4
    d = schedule(
        world([node("n1", cpu=16)], [job("c", tenant="chemistry", cpu=2)], two(), running,
              policy=FIFO)
    )  # fmt: skip
    assert blocked(d)["c"].reason == (
        "waiting for quota: tenant chemistry uses 0 of 4 cpu; "
        "the rest is lent to cohort science until the borrowers' jobs end"
    )


def test_jobs_that_cannot_be_preempted_do_not_borrow_when_preemption_is_on() -> None:
    jobs = [job(f"p{i}", cpu=2, seq=i, preemptible=False) for i in range(3)]
    d = schedule(world([node("n1", cpu=8)], jobs, two(), policy=FAIR))
    assert admitted(d) == ["p0", "p1"]
    assert blocked(d)["p2"].reason == (
        "waiting for quota: tenant physics uses 4 of 4 cpu; "
        "a job that cannot be preempted does not borrow"
    )


def test_borrowing_jobs_go_after_jobs_within_nominal_quota() -> None:
    # physics is at its nominal quota; its high-priority job would borrow, so chemistry's
    # low-priority job (within its own nominal quota) gets the last free room first.
    running = [run(f"r{i}", "n1", cpu=2) for i in range(2)]
    jobs = [job("p", cpu=2, priority=1000), job("c", tenant="chemistry", cpu=2, priority=100)]
    d = schedule(world([node("n1", cpu=6)], jobs, two(), running, policy=FIFO))
    assert admitted(d) == ["c"]
    assert blocked(d)["p"].kind is BlockKind.CAPACITY


def test_a_nominated_borrower_is_decided_in_place_the_same_job_unnominated_after_the_rest() -> None:
    # physics is at its nominal quota and chemistry lends nothing. The nominated job is
    # decided where it stands (held back by quota); p, of the same tenant and shape, would
    # borrow: it goes after chemistry's c, not with the nominated job's decision.
    running = [run(f"r{i}", "n1", cpu=2) for i in range(2)]
    jobs = [
        replace(job("p-nominated", cpu=2, seq=1), nominated=True),
        job("p", cpu=2, seq=2),
        job("c", tenant="chemistry", cpu=3, seq=3),
    ]
    d = schedule(world([node("n1", cpu=6)], jobs, two(lend=quota(cpu=0)), running, policy=FIFO))
    assert [(b.job_id, b.kind, b.position) for b in d.blocked] == [
        ("p-nominated", BlockKind.QUOTA, 1),
        ("c", BlockKind.CAPACITY, 2),
        ("p", BlockKind.QUOTA, 3),
    ]


# --- pools -----------------------------------------------------------------------------


def gpu_tenant(gpu: int) -> TenantState:
    return member("physics", cohort=None, nominal=quota(gpu=gpu), pool="gpu")


def test_a_pool_entry_limits_jobs_that_name_the_pool() -> None:
    nodes = [node("g1", gpus=8, pool="gpu")]
    jobs = [job("a", gpu=2, pool="gpu", seq=1), job("b", gpu=1, pool="gpu", seq=2)]
    d = schedule(world(nodes, jobs, [gpu_tenant(2)], policy=FIFO))
    assert admitted(d) == ["a"]
    assert blocked(d)["b"].reason == "waiting for quota: tenant physics uses 2 of 2 gpu in pool gpu"


def test_a_pool_less_job_is_charged_where_it_lands() -> None:
    nodes = [node("g1", gpus=8, pool="gpu")]
    jobs = [job("a", gpu=2, seq=1), job("b", gpu=1, seq=2)]
    d = schedule(world(nodes, jobs, [gpu_tenant(2)], policy=FIFO))
    assert admitted(d) == ["a"]
    assert blocked(d)["b"].kind is BlockKind.QUOTA


def test_never_when_a_pool_less_job_must_land_where_its_pool_quota_never_lets_it() -> None:
    # Only pool gpu has GPUs, and physics may hold 2 there: a 4-GPU job naming no pool used
    # to wait "for quota" for ever.
    nodes = [node("g1", gpus=8, pool="gpu"), node("l1", cpu=8, pool="light")]
    big = job("j", gpu=4)
    d = schedule(world(nodes, [big], [gpu_tenant(2)], policy=FIFO))
    assert blocked(d)["j"].reason == (
        "can never run: needs 4 gpu in total but tenant physics has a quota of 2 gpu in pool gpu"
    )
    assert never_reason(world(nodes, [], [gpu_tenant(2)]), big) == blocked(d)["j"].reason
    # A CPU gang the light pool cannot hold alone spills into pool gpu, where physics may
    # hold 1 cpu: never, whatever the placement.
    tenant = member("physics", cohort=None, nominal=quota(cpu=1), pool="gpu")
    gang = job("g", cpu=4, tasks=3)
    d = schedule(world(nodes, [gang], [tenant], policy=FIFO))
    assert blocked(d)["g"].reason == (
        "can never run: needs 4 cpu in total but tenant physics has a quota of 1 cpu in pool "
        "gpu (at least 1 of its 3 tasks land there: the other pools hold 2)"
    )
    assert admitted(schedule(world(nodes, [job("f", cpu=4, tasks=2)], [tenant], policy=FIFO)))


def test_a_pool_less_gang_that_fits_only_split_across_pools_is_placed_so() -> None:
    # physics may hold 8 cpu in pool gpu. Two tasks of 5 cpu fit only one in each pool:
    # best fit puts both on the gpu nodes (10 cpu there), and no single pool holds both.
    nodes = [node("g1", cpu=8, pool="gpu"), node("g2", cpu=8, pool="gpu"), node("l1", cpu=8)]
    tenant = member("physics", cohort=None, nominal=quota(cpu=8), pool="gpu")
    d = schedule(world(nodes, [job("j", cpu=5, tasks=2)], [tenant], policy=FIFO))
    assert admitted(d) == ["j"]
    pools = sorted(p.node[0] for p in d.admitted[0].placements)
    assert pools == ["g", "l"]  # one task in each pool


def test_a_split_gang_takes_only_what_each_pool_quota_leaves() -> None:
    # 5 tasks of 2 cpu; physics may hold 4 cpu in pool gpu (2 tasks), and the other pool
    # has room for 2 tasks now (another tenant's job holds the rest): 4 tasks fit within
    # quota, so the gang waits for quota.
    nodes = [node("g1", cpu=16, pool="gpu"), node("l1", cpu=6)]
    tenant = TenantState("physics", quota(cpu=100), quotas=(PoolQuota("gpu", quota(cpu=4)),))
    other = run("other", "l1", tenant="chemistry", cpu=2)
    gang = [job("gang", cpu=2, tasks=5)]
    d = schedule(world(nodes, gang, [tenant], [other], policy=FIFO))
    assert admitted(d) == []
    assert blocked(d)["gang"].kind is BlockKind.QUOTA
    # Once it ends, the gang splits 2 + 3.
    d = schedule(world(nodes, gang, [tenant], policy=FIFO))
    assert admitted(d) == ["gang"]
    on = [p.node for p in d.admitted[0].placements]
    assert on.count("g1") == 2 and on.count("l1") == 3


def test_a_pool_less_job_moves_to_a_pool_with_room_in_its_quota() -> None:
    # Best fit would land on g1 (tightest), where physics' cpu quota is 1: it goes to l1.
    nodes = [node("g1", cpu=4, pool="gpu"), node("l1", cpu=8, pool="light")]
    tenant = member("physics", cohort=None, nominal=quota(cpu=1), pool="gpu")
    d = schedule(world(nodes, [job("a", cpu=2)], [tenant], policy=FIFO))
    assert d.admitted[0].placements[0].node == "l1"


def test_the_tenant_wide_entry_counts_every_pool() -> None:
    nodes = [node("g1", cpu=8, pool="gpu"), node("l1", cpu=8, pool="light")]
    tenant = TenantState("physics", quota(cpu=4), quotas=(PoolQuota("gpu", quota(cpu=8)),))
    jobs = [job("a", cpu=3, pool="gpu", seq=1), job("b", cpu=2, pool="light", seq=2)]
    d = schedule(world(nodes, jobs, [tenant], policy=FIFO))
    assert admitted(d) == ["a"]
    assert blocked(d)["b"].reason == "waiting for quota: tenant physics uses 3 of 4 cpu"


# --- never -----------------------------------------------------------------------------


def test_never_when_above_what_the_tenant_could_ever_borrow() -> None:
    tenants = two(borrow=quota(cpu=2))
    d = schedule(world([node("n1", cpu=16)], [job("j", cpu=7)], tenants, policy=FIFO))
    assert blocked(d)["j"].reason == (
        "can never run: needs 7 cpu in total but tenant physics may hold at most 6 cpu "
        "(a quota of 4 cpu plus what it may borrow in cohort science)"
    )
    d = schedule(world([node("n1", cpu=16)], [job("j", cpu=6)], tenants, policy=FIFO))
    assert admitted(d) == ["j"]


def test_never_names_the_pool_of_a_pool_entry() -> None:
    nodes = [node("g1", gpus=8, pool="gpu")]
    d = schedule(world(nodes, [job("j", gpu=4, pool="gpu")], [gpu_tenant(2)], policy=FIFO))
    assert blocked(d)["j"].reason == (
        "can never run: needs 4 gpu in total but tenant physics has a quota of 2 gpu in pool gpu"
    )


def test_never_when_a_job_that_cannot_be_preempted_is_above_its_nominal_quota() -> None:
    # With preemption on, it may not borrow: its tenant's nominal quota is all it can get,
    # though the cohort has room to lend (it used to wait "for quota" forever).
    big = job("j", cpu=6, preemptible=False)
    d = schedule(world([node("n1", cpu=16)], [big], two(), policy=FAIR))
    assert blocked(d)["j"].reason == (
        "can never run: needs 6 cpu in total but tenant physics has a quota of 4 cpu; "
        "a job that cannot be preempted does not borrow"
    )
    assert never_reason(world([node("n1", cpu=16)], [], two(), policy=FAIR), big) is not None
    # Without preemption it borrows, as a preemptible job does with it.
    assert admitted(schedule(world([node("n1", cpu=16)], [big], two(), policy=FIFO))) == ["j"]
    assert admitted(
        schedule(world([node("n1", cpu=16)], [replace(big, preemptible=True)], two(), policy=FAIR))
    ) == ["j"]


def test_never_reason_for_the_submit_check() -> None:
    snapshot = world([node("n1", cpu=16)], [], two(borrow=quota(cpu=2)))
    assert never_reason(snapshot, job("ok", cpu=6)) is None
    assert never_reason(snapshot, job("big", cpu=7)) is not None
    assert never_reason(snapshot, job("huge", cpu=32)) == (
        "can never run: asks for 32 cpu per task but the largest node has 16"
    )


def test_usage_is_the_larger_of_tenant_usage_and_running_jobs() -> None:
    # The snapshot's tenant usage says 1 cpu, its running jobs hold 3: 3 counts.
    tenant = TenantState("physics", quota(cpu=4), usage=res(cpu=1))
    d = schedule(
        world([node("n1", cpu=8)], [job("j", cpu=2)], [tenant], [run("r", "n1", cpu=3)],
              policy=FIFO)
    )  # fmt: skip
    assert blocked(d)["j"].reason == "waiting for quota: tenant physics uses 3 of 4 cpu"
