"""Pure scheduler: a snapshot in, admission, preemption and placement decisions out. No I/O.

Shared by the live control plane and the simulator.  ``docs/scheduling.md``
describes the rules and what the control plane must put in a ``Snapshot``.
"""

from virtuai.scheduler.core import queue_order, schedule
from virtuai.scheduler.fairshare import FairShare, accrue, cluster_capacity, fair_share
from virtuai.scheduler.feasibility import never_runs_reason
from virtuai.scheduler.plan import Plan, never_reason, plan
from virtuai.scheduler.snapshot import Policy

__all__ = [
    "FairShare",
    "Plan",
    "Policy",
    "accrue",
    "cluster_capacity",
    "fair_share",
    "never_reason",
    "never_runs_reason",
    "plan",
    "queue_order",
    "schedule",
]
