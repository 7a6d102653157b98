"""``/api/v1/priority-classes``: the classes a job may name (``--priority``), as Kubernetes'
``PriorityClass`` objects: a value (higher goes first, and may preempt lower) and whether
jobs of the class may be preempted."""

from __future__ import annotations

from fastapi import APIRouter

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import PriorityClassOut

router = APIRouter(prefix="/api/v1/priority-classes", tags=["scheduling"])


@router.get("")
def priority_classes(caller: CallerDep, context: Context) -> list[PriorityClassOut]:
    """Every class of this server, highest value first (any signed-in user: each may submit
    with them)."""
    classes = sorted(context.rules.priority_classes.values(), key=lambda c: -c.value)
    return [
        PriorityClassOut(name=c.name, value=c.value, preemptible=c.preemptible) for c in classes
    ]
