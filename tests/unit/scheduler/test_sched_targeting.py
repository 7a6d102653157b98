"""Targeting (node class, labels: ``PendingJob.allowed_nodes``) and nodes that accept no new
work (cordoned, draining, lost: ``NodeState.accepting``), as properties of schedule()."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_builders import Gi
from test_sched_properties import snapshots

from virtuai.domain.resources import Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.scheduler import schedule
from virtuai.scheduler.snapshot import BlockKind, NodeState, PendingJob, Snapshot, TenantState


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.data())
def test_jobs_land_only_on_allowed_and_accepting_nodes(
    snapshot: Snapshot, data: st.DataObject
) -> None:
    names = [s.node.name for s in snapshot.nodes]
    closed = data.draw(st.sets(st.sampled_from(names)))
    nodes = tuple(replace(s, accepting=s.node.name not in closed) for s in snapshot.nodes)
    pending = tuple(
        replace(
            job,
            allowed_nodes=data.draw(st.one_of(st.none(), st.frozensets(st.sampled_from(names)))),
        )
        for job in snapshot.pending
    )
    snapshot = replace(snapshot, nodes=nodes, pending=pending)
    decisions = schedule(snapshot)
    by_id = {job.id: job for job in pending}
    for admission in decisions.admitted:
        job = by_id[admission.job_id]
        for placement in admission.placements:
            assert placement.node not in closed
            assert job.allowed_nodes is None or placement.node in job.allowed_nodes


def _node(name: str, cpu: int) -> NodeState:
    return NodeState(Node(name, "default", "local", Resources(cpu * 1000, 8 * Gi)))


def _job(job_id: str, allowed: frozenset[str] | None, cpu: int = 1) -> PendingJob:
    return PendingJob(
        id=job_id,
        tenant="t",
        priority=500,
        submitted_at=0.0,
        seq=int(job_id[1:]),
        per_task=Resources(cpu * 1000, Gi),
        allowed_nodes=allowed,
    )


def test_a_job_matching_no_node_can_never_run_and_one_on_a_closed_node_waits() -> None:
    nodes = (_node("light01", 4), replace(_node("gpu01", 8), accepting=False))
    tenants = (TenantState("t", Quota()),)
    jobs = (
        _job("j1", frozenset()),  # its class and labels match no node
        _job("j3", frozenset({"gpu01"}), cpu=16),  # bigger than any node it may use
        _job("j4", None),
    )
    decisions = schedule(Snapshot(nodes, tenants, jobs))
    assert [(a.job_id, a.placements[0].node) for a in decisions.admitted] == [("j4", "light01")]
    blocked = {b.job_id: b for b in decisions.blocked}
    assert blocked["j1"].kind is BlockKind.NEVER
    assert "no node matches its node class and constraints" in blocked["j1"].reason
    assert blocked["j3"].kind is BlockKind.NEVER
    # Its only node is cordoned: it waits (it could run once the node is uncordoned).
    waiting = schedule(Snapshot(nodes, tenants, (_job("j2", frozenset({"gpu01"})),)))
    assert waiting.admitted == () or list(waiting.admitted) == []
    assert waiting.blocked[0].kind is not BlockKind.NEVER
