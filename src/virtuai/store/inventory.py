"""Nodes as recorded in the database, and what admitted work holds on them.

Two kinds of work hold resources of the physical nodes: jobs that run on them
(``vc_id IS NULL``) and admitted virtual clusters.  Jobs *inside* a virtual
cluster hold part of the cluster's own nodes, never the platform's again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from virtuai.domain.cluster import NodeState, node_matches, parse_constraint
from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.vcluster import VcState
from virtuai.domain.workload import JobState, TaskPlacement
from virtuai.scheduler import snapshot as sched
from virtuai.store.models import JobRow, NodeRow, VirtualClusterRow

HOLDING_STATES = [s.value for s in JobState if s.holds_resources()]
VC_HOLDING_STATES = [s.value for s in VcState if s.holds_resources(admitted=True)]


def platform_job_holds() -> ColumnElement[bool]:
    """Jobs that hold resources of the physical nodes (not jobs inside a virtual cluster)."""
    return and_(JobRow.state.in_(HOLDING_STATES), JobRow.vc_id.is_(None))


def vc_holds() -> ColumnElement[bool]:
    """Virtual clusters that hold their admitted placement on the physical nodes."""
    return and_(
        VirtualClusterRow.state.in_(VC_HOLDING_STATES), VirtualClusterRow.admitted_at.is_not(None)
    )


def node_from_row(row: NodeRow) -> Node:
    gpus = tuple(
        GpuDevice(index=g["index"], model=g["model"], memory=g["memory"], uuid=g.get("uuid", ""))
        for g in row.gpus
    )
    return Node(
        name=row.name,
        pool=row.pool,
        site=row.site,
        capacity=Resources(row.cpu_milli, row.memory, len(gpus)),
        gpus=gpus,
    )


def placement_to_json(placements: Iterable[TaskPlacement]) -> list[dict[str, Any]]:
    return [
        {
            "index": p.index,
            "node": p.node,
            "cpu_milli": p.resources.cpu_milli,
            "memory": p.resources.memory,
            "gpu": p.resources.gpu,
            "gpu_indices": list(p.gpu_indices),
        }
        | ({"host_ports": list(p.host_ports)} if p.host_ports else {})
        for p in placements
    ]


def placement_from_json(data: Sequence[dict[str, Any]]) -> list[TaskPlacement]:
    return [
        TaskPlacement(
            index=p["index"],
            node=p["node"],
            resources=Resources(p["cpu_milli"], p["memory"], p["gpu"]),
            gpu_indices=tuple(p["gpu_indices"]),
            host_ports=tuple(p.get("host_ports") or ()),
        )
        for p in data
    ]


def load_node_states(session: Session) -> list[sched.NodeState]:
    """Schedulable nodes with what admitted, unfinished jobs and virtual clusters hold on each."""
    rows = list(
        session.scalars(select(NodeRow).where(NodeRow.schedulable.is_(True)).order_by(NodeRow.name))
    )
    nodes = [node_from_row(r) for r in rows]
    accepting = {r.name: node_accepts_work(r) for r in rows}
    allocated: dict[str, Resources] = defaultdict(Resources)
    busy: dict[str, set[int]] = defaultdict(set)
    ports: dict[str, set[int]] = defaultdict(set)
    placements = list(session.scalars(select(JobRow.placement).where(platform_job_holds())))
    placements += session.scalars(select(VirtualClusterRow.placement).where(vc_holds()))
    for placement in placements:
        for task in placement_from_json(placement):
            allocated[task.node] += task.resources
            busy[task.node].update(task.gpu_indices)
            ports[task.node].update(task.host_ports)
    return [
        sched.NodeState(
            node=n,
            allocated=allocated[n.name],
            busy_gpus=frozenset(busy[n.name]),
            accepting=accepting[n.name],
            ports=frozenset(ports[n.name]),
        )
        for n in nodes
    ]


def node_accepts_work(row: NodeRow) -> bool:
    """Ready (not cordoned, draining) and not lost."""
    return row.state == NodeState.READY.value and row.lost_at is None


def shown_state(row: NodeRow) -> str:
    """The state users see: ``unreachable`` while lost, else the administrator's wish."""
    return NodeState.UNREACHABLE.value if row.lost_at is not None else row.state


class Targetable(Protocol):
    """What targeting reads of a node (a ``NodeRow``, or a copy of those columns)."""

    @property
    def name(self) -> str: ...
    @property
    def node_class(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


def allowed_nodes(
    rows: Iterable[Targetable],
    node_class: str | None,
    constraints: Sequence[str],
    *,
    walltime_s: int | None = None,
    max_walltime_by_class: Mapping[str, int] | None = None,
) -> frozenset[str] | None:
    """The nodes a job targeting ``node_class`` and ``constraints`` may use; None: any.

    A class with a walltime cap shorter than the job's time limit is not for it."""
    limits = max_walltime_by_class or {}
    too_short = {c for c, cap in limits.items() if walltime_s is not None and walltime_s > cap}
    if node_class is None and not constraints and not too_short:
        return None
    wanted = [parse_constraint(c) for c in constraints]
    return frozenset(
        r.name
        for r in rows
        if r.node_class not in too_short
        and node_matches(r.node_class, r.labels or {}, node_class, wanted)
    )


def record_inventory(session: Session, nodes: Iterable[Node], now: dt.datetime) -> None:
    """Upsert the nodes a driver reports. Nodes that vanished stay, unschedulable."""
    for node in nodes:
        row = session.get(NodeRow, node.name)
        if row is None:
            row = NodeRow(name=node.name)
            session.add(row)
        row.site, row.pool = node.site, node.pool
        row.cpu_milli, row.memory = node.capacity.cpu_milli, node.capacity.memory
        row.gpus = [
            {"index": g.index, "model": g.model, "memory": g.memory, "uuid": g.uuid}
            for g in node.gpus
        ]
        row.schedulable = True
        row.updated_at = now
    session.flush()


def describe_nodes(
    session: Session, names: Iterable[str], node_class: str, labels: dict[str, str], address: str
) -> None:
    """What an instance says of its own node at start: class, labels, address."""
    for name in names:
        row = session.get(NodeRow, name)
        if row is not None:
            row.node_class, row.labels, row.address = node_class, dict(labels), address


def mark_unschedulable_except(session: Session, site: str, names: Iterable[str]) -> None:
    keep = set(names)
    for row in session.scalars(select(NodeRow).where(NodeRow.site == site)):
        if row.name not in keep:
            row.schedulable = False
