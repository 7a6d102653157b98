"""The inventory as users see it (nodes, what is allocated, which GPUs are busy, who leads),
and what administrators do to nodes (cordon, drain, uncordon)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.cluster import NodeState as AdminState
from virtuai.errors import NotFound
from virtuai.scheduler.snapshot import NodeState
from virtuai.services.access import Caller
from virtuai.store.inventory import load_node_states, shown_state
from virtuai.store.lease import read_lease
from virtuai.store.models import NodeRow


@dataclass(frozen=True, slots=True)
class NodeView:
    row: NodeRow
    state: NodeState
    shown_state: str = AdminState.READY.value
    heartbeat_age_s: float | None = None
    leader: bool = False


def list_nodes(session: Session, caller: Caller, now: dt.datetime | None = None) -> list[NodeView]:
    """Every user may see the inventory; it holds nothing of other tenants but totals."""
    now = now or dt.datetime.now(dt.UTC)
    states = {s.node.name: s for s in load_node_states(session)}
    lease = read_lease(session)
    leader = lease.holder_node if lease is not None and lease.holder else None
    rows = session.scalars(
        select(NodeRow).where(NodeRow.name.in_(list(states))).order_by(NodeRow.name)
    )
    return [
        NodeView(
            row,
            states[row.name],
            shown_state=shown_state(row),
            heartbeat_age_s=None
            if row.heartbeat_at is None
            else max(0.0, round((now - row.heartbeat_at).total_seconds(), 1)),
            leader=row.name == leader,
        )
        for row in rows
    ]


def set_node_state(
    session: Session,
    caller: Caller,
    name: str,
    state: AdminState,
    *,
    requeue: bool = False,
) -> NodeRow:
    """Cordon (no new work), drain (no new work; running jobs end, or are requeued with
    ``requeue``) or uncordon (ready again).  The leader's node watch does the requeueing."""
    caller.require_admin(f"{state.value} nodes" if state is not AdminState.READY else "uncordon")
    row = session.get(NodeRow, name)
    if row is None:
        raise NotFound(f"no node {name}", field="name")
    row.state = state.value
    row.drain_requeue = requeue and state is AdminState.DRAINING
    return row
