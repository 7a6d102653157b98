"""The pass's shortcuts change no decision (hypothesis, over the policy properties' worlds).

- ``Snapshot.usage_complete``: usage taken from the tenants instead of summed from
  ``running`` when the caller vouches that it is that sum;
- the memo of blocked decisions per (tenant, shape) (``core.MEMO_BLOCKED``);
- ``Policy.report_blocked=False``: the pass may stop early, but admits, preempts and
  rejects (``NEVER``) exactly what the full pass does, and says the same of the
  jobs it does decide.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from test_sched_policy_properties import worlds

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import Quota
from virtuai.scheduler import core, schedule
from virtuai.scheduler.snapshot import BlockKind, Policy, Snapshot


def with_true_usage(snapshot: Snapshot) -> Snapshot:
    """Each tenant's usage set to the sum of its running jobs (what the simulator keeps)."""
    sums: dict[str, Resources] = {}
    for job in snapshot.running:
        sums[job.tenant] = sums.get(job.tenant, Resources()) + job.total
    tenants = tuple(replace(t, usage=sums.get(t.name, Resources())) for t in snapshot.tenants)
    return replace(snapshot, tenants=tenants)


def unlimited(snapshot: Snapshot) -> Snapshot:
    tenants = tuple(replace(t, quota=Quota(), quotas=()) for t in snapshot.tenants)
    return replace(snapshot, tenants=tenants)


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_usage_complete_changes_no_decision(snapshot: Snapshot) -> None:
    full = with_true_usage(snapshot)
    assert schedule(replace(full, usage_complete=True)) == schedule(full)


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_memo_of_blocked_decisions_changes_no_decision(snapshot: Snapshot) -> None:
    remembered = schedule(snapshot)
    core.MEMO_BLOCKED = False
    try:
        plain = schedule(snapshot)
    finally:
        core.MEMO_BLOCKED = True
    assert remembered == plain


no_preemption = st.builds(
    Policy,
    fair_share=st.booleans(),
    backfill=st.booleans(),
    preemption=st.just(False),
    borrowing=st.booleans(),
)


@settings(max_examples=120, deadline=None)
@given(worlds(), no_preemption, st.booleans())
def test_early_stop_admits_and_rejects_the_same(
    snapshot: Snapshot, policy: Policy, quotas: bool
) -> None:
    world = replace(snapshot if quotas else unlimited(snapshot), policy=policy)
    full = schedule(world)
    quick = schedule(replace(world, policy=replace(policy, report_blocked=False)))
    assert quick.admitted == full.admitted
    assert quick.preempted == full.preempted
    said = {b.job_id: b for b in full.blocked}
    for b in quick.blocked:
        assert (b.kind, b.reason, b.expected_start) == (
            said[b.job_id].kind,
            said[b.job_id].reason,
            said[b.job_id].expected_start,
        )
    never = {b.job_id for b in full.blocked if b.kind is BlockKind.NEVER}
    assert never == {b.job_id for b in quick.blocked if b.kind is BlockKind.NEVER}
