"""Site pools (``<site>:<partition>``) in the scheduler: only jobs that name them land there."""

from __future__ import annotations

from sched_builders import job, node, snap, tenant

from virtuai.scheduler import never_reason, schedule


def test_a_job_naming_no_pool_never_lands_on_a_site() -> None:
    local = node("n1", cpu=2)
    site = node("hpc:c1", cpu=64, pool="hpc:batch")
    decisions = schedule(
        snap([local, site], [job("big", cpu=8), job("small", cpu=1)], [tenant("physics")])
    )
    placed = {a.job_id: {p.node for p in a.placements} for a in decisions.admitted}
    assert placed == {"small": {"n1"}}
    assert [b.job_id for b in decisions.blocked] == ["big"]


def test_a_job_naming_the_site_pool_runs_there_and_a_gang_is_never_split() -> None:
    local = node("n1", cpu=8)
    sites = [node(f"hpc:c{i}", cpu=4, pool="hpc:batch") for i in (1, 2)]
    gang = job("gang", cpu=3, tasks=2, pool="hpc:batch")
    decisions = schedule(snap([local, *sites], [gang], [tenant("physics")]))
    (admitted,) = decisions.admitted
    assert {p.node for p in admitted.placements} == {"hpc:c1", "hpc:c2"}


def test_a_pool_less_job_too_big_for_local_nodes_is_never_runnable_even_if_a_site_fits() -> None:
    local = node("n1", cpu=2)
    site = node("hpc:c1", cpu=64, pool="hpc:batch")
    snapshot = snap([local, site], [], [tenant("physics")])
    assert never_reason(snapshot, job("big", cpu=8)) is not None
    assert never_reason(snapshot, job("big", cpu=8, pool="hpc:batch")) is None


def test_quota_over_all_pools_counts_local_and_site_jobs_together() -> None:
    local = node("n1", cpu=4)
    site = node("hpc:c1", cpu=4, pool="hpc:batch")
    running_local = job("local", cpu=3)
    remote = job("remote", cpu=2, pool="hpc:batch")
    decisions = schedule(snap([local, site], [running_local, remote], [tenant("physics", cpu=4)]))
    assert [a.job_id for a in decisions.admitted] == ["local"]
    assert "quota" in decisions.blocked[0].reason
