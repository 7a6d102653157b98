"""The inventory as users see it: nodes, what is allocated on them, which GPUs are busy."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.scheduler.snapshot import NodeState
from virtuai.services.access import Caller
from virtuai.store.inventory import load_node_states
from virtuai.store.models import NodeRow


@dataclass(frozen=True, slots=True)
class NodeView:
    row: NodeRow
    state: NodeState


def list_nodes(session: Session, caller: Caller) -> list[NodeView]:
    """Every user may see the inventory; it holds nothing of other tenants but totals."""
    states = {s.node.name: s for s in load_node_states(session)}
    rows = session.scalars(
        select(NodeRow).where(NodeRow.name.in_(list(states))).order_by(NodeRow.name)
    )
    return [NodeView(row, states[row.name]) for row in rows]
