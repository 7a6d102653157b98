"""Pure scheduler: a snapshot in, admission and placement decisions out. No I/O.

Shared by the live control plane and the simulator.
"""

from virtuai.scheduler.core import queue_order, schedule
from virtuai.scheduler.feasibility import never_runs_reason

__all__ = ["never_runs_reason", "queue_order", "schedule"]
