"""Virtual clusters: what a tenant asks for, and the one state machine a cluster moves through.

Life cycle (every arrow is an event with who, when and why)::

    creating -> running -> suspending -> suspended -> resuming -> running
        |                                     ^            |
        v                                     +------------+    (resume failed: back, with why)
      failed
    every state but deleted  -> deleting -> deleted

A cluster *waits for admission* in ``creating`` and ``resuming``: the
scheduler admits it like a gang (all nodes or none) within its tenant's quota,
and only then does the runtime build or resume it.  While admitted, and in
``running`` and ``suspending``, it holds its nodes' resources; a ``suspended``
cluster holds none (its disks stay until it is deleted), nor do ``deleted`` and
``failed`` ones (a failed build is rolled back whole).  ``deleted`` is final;
rows stay for history, and the name (and subnet) of a deleted or failed
cluster may be used again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from virtuai.domain.resources import Resources
from virtuai.errors import Conflict

VC_JOB_PREFIX = "vc-"  # a cluster's id in the scheduler's snapshot: ``vc-<row id>``
DEFAULT_IMAGE = "host"


class VcState(enum.StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"
    DELETING = "deleting"
    DELETED = "deleted"
    FAILED = "failed"

    def is_finished(self) -> bool:
        """Nothing more happens by itself: the cluster is gone (or never came to be)."""
        return self in (VcState.DELETED, VcState.FAILED)

    def waits_for_admission(self) -> bool:
        """States in which an unadmitted cluster is in the scheduler's queue."""
        return self in (VcState.CREATING, VcState.RESUMING)

    def holds_resources(self, *, admitted: bool) -> bool:
        """Whether the cluster counts against capacity and quota in this state.

        ``admitted``: the scheduler has placed it (and its placement was not
        released since); ``creating`` and ``resuming`` hold only once admitted,
        ``deleting`` only what a running cluster held until it is torn down.
        """
        if self in (VcState.RUNNING, VcState.SUSPENDING):
            return True
        if self in (VcState.CREATING, VcState.RESUMING, VcState.DELETING):
            return admitted
        return False

    def is_live(self) -> bool:
        """The cluster owns its name and subnet (every state but ``deleted`` and ``failed``)."""
        return not self.is_finished()


LIVE_STATES = frozenset(s for s in VcState if s.is_live())

VC_TRANSITIONS: Mapping[VcState, frozenset[VcState]] = {
    VcState.CREATING: frozenset({VcState.RUNNING, VcState.FAILED, VcState.DELETING}),
    VcState.RUNNING: frozenset({VcState.SUSPENDING, VcState.DELETING}),
    VcState.SUSPENDING: frozenset({VcState.SUSPENDED, VcState.DELETING}),
    VcState.SUSPENDED: frozenset({VcState.RESUMING, VcState.DELETING}),
    VcState.RESUMING: frozenset({VcState.RUNNING, VcState.SUSPENDED, VcState.DELETING}),
    VcState.DELETING: frozenset({VcState.DELETED}),
    VcState.DELETED: frozenset(),
    VcState.FAILED: frozenset({VcState.DELETING}),
}


def check_vc_transition(current: VcState, new: VcState) -> None:
    """Raise ``Conflict`` unless ``current -> new`` is in the transition table."""
    if new not in VC_TRANSITIONS[current]:
        raise Conflict(f"a virtual cluster cannot go from {current} to {new}", field="state")


@dataclass(frozen=True, slots=True)
class VcRequest:
    """What a tenant asks for: ``nodes`` identical nodes of ``per_node`` each."""

    name: str
    nodes: int
    per_node: Resources
    image: str = DEFAULT_IMAGE
    gateway: bool = False

    @property
    def total(self) -> Resources:
        return self.per_node.times(self.nodes)


def vc_job_id(row_id: int) -> str:
    """The cluster's id among the scheduler's jobs."""
    return f"{VC_JOB_PREFIX}{row_id}"


def vc_row_id(job_id: str) -> int | None:
    """The row id of a scheduler id made by ``vc_job_id``; ``None`` for a job's id."""
    if not job_id.startswith(VC_JOB_PREFIX):
        return None
    rest = job_id[len(VC_JOB_PREFIX) :]
    return int(rest) if rest.isdigit() else None


def vnode_hostname(vc_name: str, index: int) -> str:
    """Node ``index`` of cluster ``vc_name`` (the runtime names its nodes the same way)."""
    return f"{vc_name}-{index}"
