"""Room promised to preemptors while their victims stop: the cluster's ``max(now, future)`` view.

A preemption is not instant: its victims hold their resources until they have
stopped, and only then does the preemptor start.  Meanwhile, for the rest of
the pass, the cluster must show on every node involved the larger of what the
victims hold now (*leaving*) and what the preemptors will hold (*planned*), so
that no later job takes room that is busy now or promised for later.
"""

from __future__ import annotations

from collections.abc import Sequence

from virtuai.domain.resources import Resources
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.backfill import Board
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["SPARE_SCAN", "Holds", "tasks_fitting"]

# How many nodes with spare room a preemptor looks at (per pool) before preempting anyone.
SPARE_SCAN = 16


class _Room:
    __slots__ = ("cpu", "gpus", "memory", "ports")

    def __init__(self) -> None:
        self.cpu, self.memory, self.gpus, self.ports = 0, 0, set[int](), set[int]()

    def add(self, p: TaskPlacement) -> None:
        self.cpu += p.resources.cpu_milli
        self.memory += p.resources.memory
        self.gpus.update(p.gpu_indices)
        self.ports.update(p.host_ports)


class Holds:
    """Per node: what victims hold now (leaving) and what preemptors will hold (planned).

    The cluster must show, on each such node, ``max(leaving, planned)`` used on
    top of everything else; ``planned`` is taken by the preemptors' placements,
    so the difference ``max(0, leaving - planned)`` is occupied as an *extra*.
    An extra is room that will be free once the victims stop: *spare* room a
    later preemptor may be promised without preempting anyone.
    """

    def __init__(self, board: Board, pool_of: dict[str, str]) -> None:
        self._board = board
        self._pool_of = pool_of
        self._leaving: dict[str, _Room] = {}
        self._planned: dict[str, _Room] = {}
        self._extra: dict[str, TaskPlacement] = {}
        # Per pool, extras in the (deterministic) order they were made; and, per pool, an
        # upper bound of the room (free + extra) on any one of them, to skip hopeless scans.
        self._by_pool: dict[str, dict[str, None]] = {}
        self._most: dict[str, list[int]] = {}

    @property
    def has_spare(self) -> bool:
        """Whether any node has spare room (``release_spare`` may promise it to a job)."""
        return bool(self._extra)

    def release_spare(self, job: PendingJob) -> list[str]:
        """Lift extras where tasks of ``job`` could then fit (until all could); the nodes lifted."""
        need = job.per_task
        pools = [job.pool] if job.pool is not None else sorted(self._by_pool)
        lifted: list[str] = []
        room_for = 0
        for pool in pools:
            most = self._most.get(pool)
            if most is None or not (
                need.cpu_milli <= most[0] and need.memory <= most[1] and need.gpu <= most[2]
            ):
                continue
            for scanned, name in enumerate(self._by_pool[pool]):
                if scanned >= SPARE_SCAN or room_for >= job.tasks:
                    break
                extra = self._extra[name].resources
                node = self._board.cluster.node(name)
                fit = tasks_fitting(
                    (node.cpu + extra.cpu_milli, node.memory + extra.memory, node.gpu + extra.gpu),
                    need,
                )
                if fit > 0:
                    self._board.release((self._extra[name],))
                    lifted.append(name)
                    room_for += fit
        return lifted

    def restore(self, lifted: Sequence[str]) -> None:
        for name in lifted:
            self._board.occupy((self._extra[name],))

    def commit(
        self,
        victims: Sequence[TaskPlacement],
        planned: Sequence[TaskPlacement],
        lifted: Sequence[str],
    ) -> None:
        """Record a decided preemption and re-occupy the extras it changes."""
        nodes = set(lifted)
        for p in victims:
            self._leaving.setdefault(p.node, _Room()).add(p)
            nodes.add(p.node)
        for p in planned:
            self._planned.setdefault(p.node, _Room()).add(p)
            nodes.add(p.node)
        for name in sorted(nodes):
            pool = self._pool_of.get(name, "")
            old = self._extra.pop(name, None)
            if old is not None:
                del self._by_pool[pool][name]
                if name not in lifted:
                    self._board.release((old,))
            leaving = self._leaving.get(name, _Room())
            planned_room = self._planned.get(name, _Room())
            gpus = tuple(sorted(leaving.gpus - planned_room.gpus))
            cpu = max(0, leaving.cpu - planned_room.cpu)
            memory = max(0, leaving.memory - planned_room.memory)
            # A victim holds its fixed ports until it has stopped, as it holds its devices.
            ports = tuple(sorted(leaving.ports - planned_room.ports))
            if cpu or memory or gpus or ports:
                extra = TaskPlacement(0, name, Resources(cpu, memory, len(gpus)), gpus, ports)
                self._board.occupy((extra,))
                self._extra[name] = extra
                self._by_pool.setdefault(pool, {})[name] = None
                node = self._board.cluster.node(name)
                most = self._most.setdefault(pool, [0, 0, 0])
                most[0] = max(most[0], node.cpu + cpu)
                most[1] = max(most[1], node.memory + memory)
                most[2] = max(most[2], node.gpu + len(gpus))


def tasks_fitting(room: tuple[int, int, int], need: Resources) -> int:
    # (Spelled out per resource: victim searches count this for every candidate's nodes.)
    cpu, memory, gpu = room
    fit = -1
    want = need.cpu_milli
    if want > 0:
        fit = cpu // want if cpu > 0 else 0
    want = need.memory
    if want > 0:
        n = memory // want if memory > 0 else 0
        fit = n if fit < 0 or n < fit else fit
    want = need.gpu
    if want > 0:
        n = gpu // want if gpu > 0 else 0
        fit = n if fit < 0 or n < fit else fit
    return 1 if fit < 0 else fit
