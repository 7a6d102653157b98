"""The nodes' free room as arrays, to skip scheduling passes that cannot admit anything.

A pass of ``schedule()`` costs at least one walk over the nodes (it builds its
working copy of the cluster), a few milliseconds on 1,000 nodes.  In a busy
replay most events change nothing the scheduler could act on: a job arrives
while the cluster is full, or a finished job frees room that no waiting job
fits in.  ``FreeRoom.could_admit`` answers, exactly and cheaply, the question
"could any waiting job be placed on the free room now, within its tenant's
quota?".  When the answer is no, a pass without preemption admits nothing,
whatever its queue order, so the simulator skips it.  When it is yes the pass
runs (and may still admit nothing, for example when a strict FIFO queue keeps
the job behind its head waiting).

The placement test is the one ``placement.Cluster.try_place`` relies on: tasks
of one shape fit on a set of nodes iff the sum over the nodes of the tasks each
one holds reaches the task count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from virtuai.domain.resources import Node, Resources
from virtuai.domain.tenancy import Quota
from virtuai.scheduler.feasibility import usable_gpus

__all__ = ["MAX_EXACT_CHECKS", "FreeRoom", "Shape"]

# (tenant, pool, cpu millicores, memory bytes, gpus) per task, and the task count.
Shape = tuple[str, str | None, int, int, int, int]
Ints = npt.NDArray[np.int64]

# After this many shapes pass the cheap totals test but fail the exact one, stop and
# let the scheduler decide: a trace with thousands of distinct shapes must not make
# the check dearer than the pass it tries to save.
MAX_EXACT_CHECKS = 64


class FreeRoom:
    """Free cpu, memory and GPUs of every node (by position in ``nodes``) and per pool."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.cpu: Ints = np.array([n.capacity.cpu_milli for n in nodes], dtype=np.int64)
        self.memory: Ints = np.array([n.capacity.memory for n in nodes], dtype=np.int64)
        self.gpu: Ints = np.array([usable_gpus(n) for n in nodes], dtype=np.int64)
        self._pool_of = [n.pool for n in nodes]
        members: dict[str | None, list[int]] = {None: list(range(len(nodes)))}
        for i, node in enumerate(nodes):
            members.setdefault(node.pool, []).append(i)
        self._where: dict[str | None, slice | Ints] = {}
        self._total: dict[str | None, list[int]] = {}
        for pool, idx in members.items():
            contiguous = idx == list(range(idx[0], idx[-1] + 1)) if idx else True
            where = slice(idx[0], idx[-1] + 1) if idx and contiguous else np.array(idx, np.int64)
            self._where[pool] = where
            self._total[pool] = [
                int(self.cpu[where].sum()),
                int(self.memory[where].sum()),
                int(self.gpu[where].sum()),
            ]

    def change(self, node: int, delta: Resources) -> None:
        """Add ``delta`` (negative to take room) to node number ``node``."""
        cpu, memory, gpu = delta.cpu_milli, delta.memory, delta.gpu
        self.cpu[node] += cpu
        self.memory[node] += memory
        self.gpu[node] += gpu
        for total in (self._total[None], self._total[self._pool_of[node]]):
            total[0] += cpu
            total[1] += memory
            total[2] += gpu

    def free_total(self, pool: str | None = None) -> Resources:
        total = self._total.get(pool)
        return Resources(*total) if total else Resources()

    def fits(self, pool: str | None, cpu: int, memory: int, gpu: int, tasks: int) -> bool:
        """Whether ``tasks`` tasks of this shape can all be placed on the free room now."""
        total = self._total.get(pool)
        if total is None or cpu * tasks > total[0] or memory * tasks > total[1]:
            return False
        if gpu * tasks > total[2]:
            return False
        where = self._where[pool]
        if tasks == 1:
            ok = (
                (self.cpu[where] >= cpu) & (self.memory[where] >= memory) & (self.gpu[where] >= gpu)
            )
            return bool(ok.any())
        held: Ints | None = None
        for free, need in ((self.cpu, cpu), (self.memory, memory), (self.gpu, gpu)):
            if need > 0:
                each = free[where] // need
                held = each if held is None else np.minimum(held, each)
        return held is None or int(held.sum()) >= tasks

    def could_admit(
        self,
        waiting: Mapping[Shape, int],
        usage: Mapping[str, list[int]],
        quotas: Mapping[str, Quota] | None,
    ) -> bool:
        """Whether some waiting shape fits the free room and (when ``quotas`` are given) its
        tenant's hard quota.  ``quotas=None`` skips the quota test (cohort borrowing)."""
        tried: dict[tuple[str | None, int, int, int, int], bool] = {}
        exact = 0
        for shape in waiting:
            tenant, pool, cpu, memory, gpu, tasks = shape
            if quotas is not None and not _within_quota(
                quotas.get(tenant), usage.get(tenant), cpu * tasks, memory * tasks, gpu * tasks
            ):
                continue
            key = (pool, cpu, memory, gpu, tasks)
            known = tried.get(key)
            if known is None:
                exact += 1
                if exact > MAX_EXACT_CHECKS:
                    return True
                known = tried[key] = self.fits(pool, cpu, memory, gpu, tasks)
            if known:
                return True
        return False


def _within_quota(
    quota: Quota | None, usage: list[int] | None, cpu: int, memory: int, gpu: int
) -> bool:
    """``QuotaLedger.blocked_reason`` is None: only resources the job asks for count."""
    if quota is None:
        return True
    held = usage or [0, 0, 0]
    for limit, used, ask in (
        (quota.cpu_milli, held[0], cpu),
        (quota.memory, held[1], memory),
        (quota.gpu, held[2], gpu),
    ):
        if limit is not None and ask > 0 and used + ask > limit:
            return False
    return True
