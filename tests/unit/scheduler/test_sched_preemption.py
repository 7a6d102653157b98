"""Preemption: reclaiming lent quota, priority within a tenant, which victims, and waiting."""

from __future__ import annotations

from dataclasses import replace

from sched_builders import FAIR, job, member, node, quota, run, world

from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import (
    Blocked,
    BlockKind,
    Decisions,
    Policy,
    Preemption,
    RunningJob,
    Snapshot,
)

NODES = [node("n1", cpu=8)]
NODES_4 = [node("n1", cpu=4)]


def blocked(d: Decisions) -> dict[str, Blocked]:
    return {b.job_id: b for b in d.blocked}


def victims(d: Decisions) -> list[str]:
    return [p.job_id for p in d.preempted]


def stopped(snapshot: Snapshot, d: Decisions) -> Snapshot:
    """The next pass after the grace period: the victims have stopped."""
    gone = set(victims(d))
    running = tuple(r for r in snapshot.running if r.id not in gone)
    nodes = world([s.node for s in snapshot.nodes], (), (), running).nodes
    return replace(snapshot, nodes=nodes, running=running)


def stopping(snapshot: Snapshot, d: Decisions) -> Snapshot:
    """The next pass within the grace period: the victims are still stopping."""
    marks = {p.job_id: p.preemptor_id for p in d.preempted}
    running = tuple(
        replace(r, preempting=True, preempted_for=marks[r.id]) if r.id in marks else r
        for r in snapshot.running
    )
    return replace(snapshot, running=running)


COHORT = [member("physics", nominal=quota(cpu=4)), member("chemistry", nominal=quota(cpu=4))]
BORROWED = [run(f"r{i}", "n1", cpu=2, started_at=float(i), end=1e6) for i in range(4)]


def test_a_lender_reclaims_its_quota_from_the_youngest_borrowing_job() -> None:
    snapshot = world(NODES, [job("c", tenant="chemistry", cpu=2)], COHORT, BORROWED)
    d = schedule(snapshot)
    assert d.preempted == (
        Preemption("r3", "c", "preempted to reclaim quota for tenant chemistry (job c)"),
    )
    assert d.admitted == ()
    assert blocked(d)["c"] == Blocked(
        "c", BlockKind.PREEMPTION, "waiting for 1 preempted job(s) to stop", 1
    )
    # While the victim stops, nothing more is preempted; once it has, the lender starts.
    again = schedule(stopping(snapshot, d))
    assert again.preempted == ()
    assert blocked(again)["c"].reason == "waiting for 1 preempted job(s) to stop"
    after = schedule(stopped(snapshot, d))
    assert [a.job_id for a in after.admitted] == ["c"]


def test_reclaiming_a_gang_preempts_just_enough() -> None:
    snapshot = world(NODES, [job("c", tenant="chemistry", cpu=2, tasks=2)], COHORT, BORROWED)
    d = schedule(snapshot)
    assert sorted(victims(d)) == ["r2", "r3"]
    assert [a.job_id for a in schedule(stopped(snapshot, d)).admitted] == ["c"]


def test_victims_are_taken_only_while_their_tenant_borrows() -> None:
    # physics borrows 2 (6 of 4); an outsider holds the last 2 cpu.  chemistry needs 4:
    # after one physics job goes, physics no longer borrows, and 2 cpu are not enough.
    tenants = [*COHORT, member("outsider", cohort=None)]
    running = [
        *(run(f"r{i}", "n1", cpu=2, started_at=float(i)) for i in range(3)),
        run("o", "n1", tenant="outsider", cpu=2),
    ]
    d = schedule(world(NODES, [job("c", tenant="chemistry", cpu=4)], tenants, running))
    assert d.preempted == ()


def test_a_tenant_within_its_nominal_quota_is_never_a_reclaim_victim() -> None:
    tenants = [*COHORT, member("biology", nominal=quota(cpu=4))]
    running = [
        run("b1", "n1", tenant="biology", cpu=4, started_at=9.0),
        run("p1", "n1", cpu=4, started_at=1.0),
    ]
    d = schedule(world(NODES, [job("c", tenant="chemistry", cpu=4)], tenants, running))
    assert d.preempted == ()


def test_a_job_above_its_nominal_quota_does_not_reclaim() -> None:
    snapshot = world(NODES, [job("c", tenant="chemistry", cpu=6)], COHORT, BORROWED)
    assert schedule(snapshot).preempted == ()


def test_higher_priority_preempts_lower_priority_jobs_of_its_own_tenant() -> None:
    running = [
        run("low", "n1", cpu=4, priority=100),
        run("same", "n1", cpu=2, priority=500),
        run("keep", "n1", cpu=2, priority=100, preemptible=False),
    ]
    d = schedule(world(NODES, [job("j", cpu=4, priority=500)], [], running))
    assert d.preempted == (
        Preemption(
            "low",
            "j",
            "preempted for job j of tenant physics, which has a higher priority (500 over 100)",
        ),
    )


def test_equal_priority_or_another_tenant_is_not_preempted_for_priority() -> None:
    running = [
        run("same", "n1", cpu=4, priority=500),
        run("other", "n1", cpu=4, priority=100, tenant="chemistry"),
    ]
    d = schedule(world(NODES, [job("j", cpu=4, priority=500)], [], running))
    assert d.preempted == ()
    assert blocked(d)["j"].kind is BlockKind.CAPACITY


def test_fewest_victims_first_then_lowest_priority_then_youngest() -> None:
    running = [
        run("small1", "n1", cpu=2, priority=100),
        run("small2", "n1", cpu=2, priority=100),
        run("big", "n1", cpu=4, priority=200),
    ]
    d = schedule(world(NODES, [job("j", cpu=4, priority=500)], [], running))
    assert victims(d) == ["big"]  # one job, though the small ones have a lower priority

    running = [run("a", "n1", cpu=4, priority=200), run("b", "n1", cpu=4, priority=100)]
    assert victims(schedule(world(NODES, [job("j", cpu=4)], [], running))) == ["b"]

    running = [
        run("old", "n1", cpu=4, priority=100, started_at=1.0),
        run("young", "n1", cpu=4, priority=100, started_at=2.0),
    ]
    assert victims(schedule(world(NODES, [job("j", cpu=4)], [], running))) == ["young"]


def test_a_search_looks_at_no_more_candidates_than_the_policy_allows() -> None:
    # In rank: small1, small2 (lowest priority, youngest first), then big.  Alone, only
    # big makes room; with two candidates allowed, the search never looks at it.
    running = [
        run("small1", "n1", cpu=2, priority=100, started_at=3.0),
        run("small2", "n1", cpu=2, priority=100, started_at=2.0),
        run("big", "n1", cpu=4, priority=200, started_at=1.0),
    ]
    pending = [job("j", cpu=4, priority=500)]
    assert victims(schedule(world(NODES, pending, [], running))) == ["big"]
    bounded = replace(FAIR, max_victim_candidates=2)
    d = schedule(world(NODES, pending, [], running, policy=bounded))
    assert sorted(victims(d)) == ["small1", "small2"]


def test_priority_preemption_frees_quota() -> None:
    tenants = [member("physics", cohort=None, nominal=quota(cpu=4))]
    running = [run("low", "n1", cpu=4, priority=100)]
    d = schedule(world([node("n1", cpu=64)], [job("j", cpu=4)], tenants, running))
    assert victims(d) == ["low"]


def test_no_preemption_when_the_job_fits_or_the_policy_is_off() -> None:
    running = [run("low", "n1", cpu=4, priority=100)]
    d = schedule(world(NODES, [job("j", cpu=4)], [], running))
    assert d.preempted == () and [a.job_id for a in d.admitted] == ["j"]
    d = schedule(world(NODES, [job("j", cpu=8)], [], running, policy=Policy(backfill=True)))
    assert d.preempted == ()


def test_room_promised_to_a_preemptor_is_not_given_to_later_jobs() -> None:
    # "j" preempts the 8-cpu "low"; it needs 4, and the other 4 are spare once "low" stops:
    # "k" is promised them without preempting "low2", and "later" gets nothing now.
    nodes = [node("n1", cpu=8), node("n2", cpu=8)]
    running = [
        run("low", "n1", cpu=8, priority=100, started_at=2.0),
        run("low2", "n2", cpu=8, priority=100, started_at=1.0),
    ]
    jobs = [
        job("j", cpu=4, priority=500, seq=1),
        job("k", cpu=4, priority=500, seq=2),
        job("later", cpu=1, priority=50, seq=3),
    ]
    snapshot = world(nodes, jobs, [], running)
    d = schedule(snapshot)
    assert victims(d) == ["low"]
    assert blocked(d)["k"].reason == "waiting for room that preempted jobs will free when they stop"
    assert blocked(d)["later"].kind is BlockKind.CAPACITY
    assert sorted(a.job_id for a in schedule(stopped(snapshot, d)).admitted) == ["j", "k"]


def test_a_victim_is_never_preempted_twice() -> None:
    running = [run("low", "n1", cpu=8, priority=100, preempting=True, preempted_for="gone")]
    d = schedule(world(NODES, [job("j", cpu=4)], [], running))
    assert d.preempted == ()


def test_non_preemptible_jobs_are_never_victims() -> None:
    running: list[RunningJob] = [run("high", "n1", cpu=8, priority=100, preemptible=False)]
    assert schedule(world(NODES, [job("j", cpu=4, priority=1000)], [], running)).preempted == ()


def test_preemption_decisions_are_the_same_every_time() -> None:
    snapshot = world(NODES, [job("c", tenant="chemistry", cpu=2, tasks=3)], COHORT, BORROWED)
    first = schedule(snapshot)
    shuffled = replace(snapshot, running=snapshot.running[::-1], tenants=snapshot.tenants[::-1])
    assert schedule(shuffled) == first == schedule(snapshot)


def test_fair_policy_used_by_default_here() -> None:
    assert FAIR.preemption and FAIR.backfill and FAIR.fair_share


def test_a_nominated_preemptor_goes_first_and_gets_the_room_it_freed() -> None:
    # "c" preempted for earlier; its victim has stopped.  A higher-priority job of a tenant
    # within its nominal quota came meanwhile: "c" still gets the freed room.
    tenants = [*COHORT, member("biology", nominal=quota(cpu=4))]
    running = BORROWED[:3]
    jobs = [
        replace(job("c", tenant="chemistry", cpu=2, priority=100), nominated=True),
        job("b", tenant="biology", cpu=2, priority=1000),
    ]
    d = schedule(world(NODES, jobs, tenants, running))
    assert [a.job_id for a in d.admitted] == ["c"]


# One node of 4 CPUs; physics may use 3 of its own and borrow from chemistry.
LENDING = [member("physics", nominal=quota(cpu=3)), member("chemistry", nominal=quota(cpu=3))]


def test_a_nominated_borrower_is_not_put_off_behind_the_job_it_preempted() -> None:
    # "hi" preempted "lo" (admitted, not yet running: back in the queue at once).  "lo"
    # fits within physics's nominal quota, "hi" would borrow; borrowers go after, so "lo"
    # would take back the room freed for "hi", and be preempted again, pass after pass
    # (#12).  Nominated, "hi" keeps its place.
    running = [run("a", "n1", cpu=2.5, priority=600, end=1e6)]
    hi = replace(job("hi", cpu=1.5, priority=600), nominated=True)
    lo = job("lo", cpu=0.5, priority=500)
    d = schedule(world(NODES_4, [hi, lo], LENDING, running))
    assert [a.job_id for a in d.admitted] == ["hi"]
    assert d.preempted == ()
    assert blocked(d)["lo"].kind is BlockKind.CAPACITY
    # Not nominated, "hi" is put off and "lo" goes first (the next pass, "hi" preempts it).
    again = schedule(world(NODES_4, [replace(hi, nominated=False), lo], LENDING, running))
    assert [a.job_id for a in again.admitted] == ["lo"]


def test_among_jobs_started_together_the_later_submitted_is_the_younger() -> None:
    running = [
        replace(run("9", "n1", cpu=4, priority=100, started_at=5.0), seq=9),
        replace(run("10", "n1", cpu=4, priority=100, started_at=5.0), seq=10),
    ]
    assert victims(schedule(world(NODES, [job("j", cpu=4)], [], running))) == ["10"]
    # Without seq, a longer (then greater) id counts as later: "10" after "9".
    running = [replace(r, seq=0) for r in running]
    assert victims(schedule(world(NODES, [job("j", cpu=4)], [], running))) == ["10"]
