"""EASY backfill: one reservation for the first blocked job, and a guard that keeps it.

When the first job blocked for capacity (the *head*) cannot start, it gets a
reservation: the earliest time it fits if running jobs end at their expected
end (start + walltime) and jobs admitted in this pass end at ``now + walltime``,
and the resources it would take then.  Later jobs may start now if they end
before that time (``now + walltime <= start``) or if they leave the reserved
resources alone, so the head never starts later than its reservation says.

"Reserved resources" are counted per node and resource, not whole nodes: on a
node the head will use, a long job may take only what is left at the reserved
time after the head's share (the *slack*), and never a GPU index the head will
get.  ``Guard`` enforces this on the pass's ``Cluster`` by occupying, on each
reserved node, whatever is free now beyond the slack (the *hold*); a short job
is placed with the holds lifted.  The holds are recomputed whenever something
on a reserved node changes, so the cluster always shows ``min(free now,
slack)`` there.

The reservation is computed without changing the cluster's indexes: a plain
per-node count of how many of the head's tasks fit, updated as releases are
replayed in end-time order (for tasks of one shape, a gang fits exactly when
the counts add up to its task count; ``Cluster.try_place`` relies on the same
fact).  Its cost is one walk over the nodes with enough GPUs free now (read from
the indexes: few of a busy cluster's) plus the releases replayed.  Like
placement, it counts only nodes the job may be placed on: a cordoned node, or a
Slurm site's for a job that names no pool, is no room for it now or later.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from virtuai.domain.resources import Resources
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.placement import Cluster
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["Board", "Guard", "Release", "Reservation", "Shape", "reserve", "shape_of", "starts_by"]

# (expected end, placements): something that will give its resources back.
Release = tuple[float, tuple[TaskPlacement, ...]]
# (pool, cpu, memory, gpu per task, tasks): what decides whether a job fits.
Shape = tuple[str | None, int, int, int, int]


def _end_of(release: Release) -> float:
    return release[0]


def _end_of3(release: tuple[float, int, tuple[TaskPlacement, ...]]) -> float:
    return release[0]


def shape_of(job: PendingJob) -> Shape:
    r = job.per_task
    return (job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks)


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    start: float
    placements: tuple[TaskPlacement, ...]  # on the cluster as it will be at ``start``
    # What is free at ``start`` (before the job's share) on each node of ``placements``.
    future: tuple[TaskPlacement, ...] = ()
    # ``start`` plus the job's time limit (inf: none): when a later reservation, made
    # around this one (``reserve(taken=...)``), may count on its room again.
    end: float = math.inf


class _Room:
    __slots__ = ("cpu", "gpu_budget", "gpus", "memory")

    def __init__(self, cpu: int, memory: int, gpu_budget: int, gpus: set[int]) -> None:
        self.cpu, self.memory, self.gpu_budget, self.gpus = cpu, memory, gpu_budget, gpus

    def tasks(self, need: Resources, limit: int) -> int:
        """How many tasks of ``need`` fit here, at most ``limit`` (``_fit``'s rule; spelled
        out: this runs for every release a reservation replays)."""
        fit = limit
        want = need.cpu_milli
        if want > 0:
            have = self.cpu
            fit = min(fit, have // want) if have > 0 else 0
        want = need.memory
        if want > 0:
            have = self.memory
            fit = min(fit, have // want) if have > 0 else 0
        want = need.gpu
        if want > 0:
            have = min(self.gpu_budget, len(self.gpus))
            fit = min(fit, have // want) if have > 0 else 0
        return fit


def _fit(free: tuple[int, int, int], need: tuple[int, int, int], limit: int) -> int:
    """How many tasks of ``need`` fit in ``free`` (as ``_Room.tasks``, capped at ``limit``)."""
    fit = limit
    for have, want in zip(free, need, strict=True):
        if want > 0:
            fit = min(fit, have // want) if have > 0 else 0
    return fit


def _room_of(cluster: Cluster, name: str, pool: str | None) -> _Room | None:
    """A room for node ``name`` as it is now, if a job of ``pool`` may be placed there
    (``Cluster.offered``)."""
    node = cluster.offered(name, pool)
    if node is None:
        return None
    return _Room(node.cpu, node.memory, node.gpu_budget, set(node.free_gpus))


def reserve(
    cluster: Cluster,
    job: PendingJob,
    releases: Iterable[Release],
    now: float,
    *,
    ordered: bool = False,
    late: bool = False,
    taken: Sequence[Reservation] = (),
    until: float = math.inf,
) -> Reservation | None:
    """When ``job`` can start at the earliest and where; ``None`` if no known end frees room
    (by ``until``: releases after it are not read).

    ``ordered``: ``releases`` already come in ascending end order (``ends.Ends``), and
    are read lazily, only as far as the reservation needs.  ``late``
    (``Policy.reserve_late``): of the nodes that will have room at the start, take
    those that get it last (then the tightest), so that room free earlier stays
    usable by other jobs meanwhile instead of being held idle for the head.

    ``taken`` (``Policy.reserve_depth``): reservations already made in this pass.  Their
    shares count as held from now until their ``end`` (a debt on each of their nodes,
    and their GPU indices are not handed out), so that this reservation never needs
    what an earlier one was promised, whenever either starts.
    """
    if taken:
        around = _reserve_around(
            cluster, job, releases, now, ordered=ordered, late=late, taken=taken
        )
        return around if around is None or around.start <= until else None
    found = _earliest(cluster, job, releases, now, ordered=ordered, late=late, until=until)
    if found is None:
        return None
    start, rooms, fits, ready = found
    return _placed(
        job, start, _tightest_first(fits, rooms, ready if late else None, now), rooms, fits
    )


def starts_by(
    cluster: Cluster, job: PendingJob, releases: Iterable[Release], now: float, until: float
) -> bool:
    """Whether ``job`` could start by ``until`` (``reserve``'s start), without choosing
    where; ``releases`` in ascending end order."""
    found = _earliest(
        cluster, job, releases, now, ordered=True, late=False, until=until, answer_only=True
    )
    return found is not None


# (start, each node's room then, the tasks it fits, when its count last grew)
_Earliest = tuple[float, dict[str, _Room], dict[str, int], dict[str, float]]


def _earliest(
    cluster: Cluster,
    job: PendingJob,
    releases: Iterable[Release],
    now: float,
    *,
    ordered: bool,
    late: bool,
    until: float,
    answer_only: bool = False,
) -> _Earliest | None:
    """``reserve``'s walk: the earliest start by ``until``, with each node's room then, the
    tasks it fits, and (``late``) when its count last grew; ``None`` if none by then.
    ``answer_only`` (``starts_by``): once the nodes fit the job now, the rooms and counts
    returned are those of the nodes walked so far (a job blocked by its quota, not by
    the room, is answered without a walk over every free node)."""
    need, tasks = job.per_task, job.tasks
    pool = job.pool
    want = (need.cpu_milli, need.memory, need.gpu)
    # Rooms only for nodes that fit a task now or get something back: a big pool is
    # walked once with plain arithmetic, and the rest is created on demand.
    rooms: dict[str, _Room] = {}
    fits: dict[str, int] = {}
    ready: dict[str, float] = {}  # (``late``) when a node's count last grew
    total = 0
    cpu_w, memory_w, gpu_w = want
    for node in cluster.offering(pool, gpu_w):
        # (Many nodes of a busy cluster fail one of these: no tuple, no call for them.)
        if cpu_w and node.cpu < cpu_w:
            continue
        if memory_w and node.memory < memory_w:
            continue
        n = _fit((node.cpu, node.memory, node.gpu), want, tasks)
        if n > 0:
            rooms[node.name] = _Room(node.cpu, node.memory, node.gpu_budget, set(node.free_gpus))
            fits[node.name] = n
            total += n
            if answer_only and total >= tasks:
                return (now, rooms, fits, ready) if now <= until else None
    start = now
    if total < tasks:
        if not ordered:
            releases = sorted(releases, key=_end_of)
        last: float | None = None
        offered = cluster.offered
        # (The loop below is ``_room_of`` and ``_Room.tasks`` spelled out: it runs for every
        # release replayed, and the early stop asks it of several shapes most passes.)
        for end, released in releases:
            # Everything ending at the same moment goes together (so the order of ties
            # cannot matter): stop before the first end after the one that was enough.
            if total >= tasks and last is not None and end > last:
                break
            if end > until:
                break  # (not enough by then)
            last = end
            for p in released:
                name = p.node
                room = rooms.get(name)
                if room is None:
                    source = offered(name, pool)
                    if source is None:
                        continue
                    room = rooms[name] = _Room(
                        source.cpu, source.memory, source.gpu_budget, set(source.free_gpus)
                    )
                    was = 0
                else:
                    was = fits[name]
                r = p.resources
                cpu = room.cpu = room.cpu + r.cpu_milli
                memory = room.memory = room.memory + r.memory
                budget = room.gpu_budget = room.gpu_budget + r.gpu
                gpus = room.gpus
                gpus.update(p.gpu_indices)
                n = tasks
                if cpu_w > 0:
                    k = cpu // cpu_w if cpu > 0 else 0
                    n = k if k < n else n
                if memory_w > 0:
                    k = memory // memory_w if memory > 0 else 0
                    n = k if k < n else n
                if gpu_w > 0:
                    have = len(gpus)
                    have = budget if budget < have else have
                    k = have // gpu_w if have > 0 else 0
                    n = k if k < n else n
                total += n - was
                if late and n > was:
                    ready[name] = end
                fits[name] = n
        if total < tasks or last is None:
            return None
        start = max(now, last)
    if start > until:
        return None
    return start, rooms, fits, ready


def _tightest_first(
    fits: dict[str, int], rooms: dict[str, _Room], ready: dict[str, float] | None, now: float
) -> list[str]:
    """Where a reservation goes: the nodes that fit a task, tightest first (fewest free
    GPUs, then cpu, then memory, then name); with ``ready`` (``late``), the nodes whose
    room comes last go before them."""
    return sorted(
        (name for name, n in fits.items() if n > 0),
        key=lambda name: (
            -ready.get(name, now) if ready is not None else 0.0,
            min(rooms[name].gpu_budget, len(rooms[name].gpus)),
            rooms[name].cpu,
            rooms[name].memory,
            name,
        ),
    )


def _placed(
    job: PendingJob,
    start: float,
    candidates: Sequence[str],
    rooms: dict[str, _Room],
    fits: dict[str, int],
) -> Reservation:
    need, tasks = job.per_task, job.tasks
    placements: list[TaskPlacement] = []
    future: list[TaskPlacement] = []
    for name in candidates:
        room = rooms[name]
        gpus = tuple(sorted(room.gpus))
        future.append(TaskPlacement(0, name, Resources(room.cpu, room.memory, len(gpus)), gpus))
        for _ in range(min(fits[name], tasks - len(placements))):
            devices = tuple(sorted(room.gpus)[: need.gpu])
            room.gpus.difference_update(devices)
            placements.append(TaskPlacement(len(placements), name, need, devices))
        if len(placements) == tasks:
            break
    end = start + job.walltime_s if job.walltime_s is not None else math.inf
    return Reservation(job.id, start, tuple(placements), tuple(future), end)


def _reserve_around(
    cluster: Cluster,
    job: PendingJob,
    releases: Iterable[Release],
    now: float,
    *,
    ordered: bool,
    late: bool,
    taken: Sequence[Reservation],
) -> Reservation | None:
    """``reserve`` with earlier reservations' shares held from now until their ends.

    The plain path (``reserve`` without ``taken``) skips nodes that fit nothing now and
    stops at the first end that is enough; this one is the same walk with a debt per
    node: what ``taken`` was promised there is subtracted from the room (which may go
    below zero until releases pay it back), its GPU indices are banned, and its own end
    is one more release that pays the debt back and lifts the ban.
    """
    need, tasks = job.per_task, job.tasks
    pool = job.pool
    debt: dict[str, list[int]] = {}  # node -> [cpu, memory, gpus]
    # node -> GPU index -> how many reservations of ``taken`` were promised it (at
    # different times): an index is free again only once the last of them has ended.
    banned: dict[str, Counter[int]] = {}
    for res in taken:
        for p in res.placements:
            d = debt.setdefault(p.node, [0, 0, 0])
            d[0] += p.resources.cpu_milli
            d[1] += p.resources.memory
            d[2] += p.resources.gpu
            banned.setdefault(p.node, Counter()).update(p.gpu_indices)
    rooms: dict[str, _Room] = {}
    fits: dict[str, int] = {}
    ready: dict[str, float] = {}
    total = 0

    def room_of(name: str) -> _Room | None:
        room = rooms.get(name)
        if room is not None:
            return room
        room = _room_of(cluster, name, pool)
        if room is None:
            return None
        d = debt.get(name)
        if d is not None:
            room.cpu -= d[0]
            room.memory -= d[1]
            room.gpu_budget -= d[2]
            room.gpus.difference_update(i for i, k in banned[name].items() if k > 0)
        rooms[name] = room
        fits[name] = 0
        return room

    want = (need.cpu_milli, need.memory, need.gpu)
    for node in cluster.offering(pool, need.gpu):
        # As in ``reserve``: a node that fits no task now gets its room on its first release.
        if _fit((node.cpu, node.memory, node.gpu), want, tasks) <= 0:
            continue
        room = room_of(node.name)
        assert room is not None
        n = room.tasks(need, tasks) if room.cpu >= 0 and room.memory >= 0 else 0
        fits[node.name] = n
        total += n
    start = now
    if total < tasks:
        ends: list[tuple[float, int, tuple[TaskPlacement, ...]]] = sorted(
            ((res.end, 1, res.placements) for res in taken if math.isfinite(res.end)),
            key=_end_of3,
        )
        plain: Iterable[Release] = releases if ordered else sorted(releases, key=_end_of)
        tagged: Iterator[tuple[float, int, tuple[TaskPlacement, ...]]] = heapq.merge(
            ((end, 0, placed) for end, placed in plain), ends, key=_end_of3
        )
        last: float | None = None
        for end, mine, released in tagged:
            if total >= tasks and last is not None and end > last:
                break
            last = end
            for p in released:
                room = room_of(p.node)
                if room is None:
                    continue
                room.cpu += p.resources.cpu_milli
                room.memory += p.resources.memory
                room.gpu_budget += p.resources.gpu
                ban = banned.get(p.node)
                if mine:  # a reservation made earlier ends: its indices are free again,
                    assert ban is not None  # unless another one was promised them too
                    ban.subtract(p.gpu_indices)
                    room.gpus.update(i for i in p.gpu_indices if ban[i] <= 0)
                else:
                    room.gpus.update(
                        p.gpu_indices if ban is None else (i for i in p.gpu_indices if ban[i] <= 0)
                    )
                n = room.tasks(need, tasks) if room.cpu >= 0 and room.memory >= 0 else 0
                total += n - fits[p.node]
                if late and n > fits[p.node]:
                    ready[p.node] = end
                fits[p.node] = n
        if total < tasks or last is None:
            return None
        start = max(now, last)
    return _placed(
        job, start, _tightest_first(fits, rooms, ready if late else None, now), rooms, fits
    )


def _slack_of(reservation: Reservation) -> tuple[dict[str, list[int]], dict[str, set[int]]]:
    """Per node of ``reservation``: what is left at its start after its share (cpu,
    memory) and the GPU indices it will not take."""
    slack: dict[str, list[int]] = {}
    gpus: dict[str, set[int]] = {}
    for room in reservation.future:
        slack[room.node] = [room.resources.cpu_milli, room.resources.memory]
        gpus[room.node] = set(room.gpu_indices)
    for p in reservation.placements:
        left = slack[p.node]
        left[0] -= p.resources.cpu_milli
        left[1] -= p.resources.memory
        gpus[p.node].difference_update(p.gpu_indices)
    return slack, gpus


class Guard:
    """Keeps reserved resources away from jobs that would still run at the reservations'
    start (the head's, and with ``Policy.reserve_depth`` those of the next blocked jobs)."""

    def __init__(self, cluster: Cluster, reservation: Reservation) -> None:
        self.cluster = cluster
        self.reservation = reservation
        self._slack, self._slack_gpus = _slack_of(reservation)
        self._held: dict[str, TaskPlacement] = {}
        # Holds lifted (``lift``) and not yet put back (``restore``): trials of the
        # unheld view in a row (a queue of jobs behind the reservation) then cost one
        # lift, not a lift and a restore per job.  Whoever needs the held view restores.
        self._lifted = False
        self.hold(self._slack)

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self._slack)

    def add(self, reservation: Reservation) -> None:
        """Keep one more reservation (``Policy.reserve_depth``), made around the earlier
        ones (``reserve(taken=...)``): on a node that several use, a long job may take only
        the least slack of them, and only GPU indices none of them will get."""
        slack, gpus = _slack_of(reservation)
        nodes = sorted(slack)
        if not self._lifted:
            self.unhold(nodes)
        for name in nodes:
            kept = self._slack.get(name)
            if kept is None:
                self._slack[name], self._slack_gpus[name] = slack[name], gpus[name]
            else:
                kept[0] = min(kept[0], slack[name][0])
                kept[1] = min(kept[1], slack[name][1])
                self._slack_gpus[name] &= gpus[name]
        if not self._lifted:
            self.hold(nodes)

    def hold(self, nodes: Iterable[str]) -> None:
        """Occupy, on each of ``nodes``, what is free now beyond its slack."""
        for name in nodes:
            slack = self._slack.get(name)
            if slack is None or name in self._held:
                continue
            node = self.cluster.node(name)
            gpus = tuple(g for g in node.free_gpus if g not in self._slack_gpus[name])
            held = TaskPlacement(
                0,
                name,
                Resources(max(0, node.cpu - slack[0]), max(0, node.memory - slack[1]), len(gpus)),
                gpus,
            )
            self.cluster.occupy((held,))
            self._held[name] = held

    def unhold(self, nodes: Iterable[str]) -> None:
        for name in nodes:
            held = self._held.pop(name, None)
            if held is not None:
                self.cluster.release((held,))

    def lift(self) -> None:
        """Lift every hold: the cluster shows what is free now, reservation or not."""
        if not self._lifted:
            self.unhold(sorted(self._held))
            self._lifted = True

    def restore(self) -> None:
        """Put the holds back as what is free now says (after ``lift``)."""
        if self._lifted:
            self._lifted = False
            self.hold(sorted(self._slack))

    def touching(self, placements: Iterable[TaskPlacement]) -> list[str]:
        """The reserved nodes among those of ``placements``, sorted."""
        return sorted({p.node for p in placements if p.node in self._slack})

    def release(self, placements: Sequence[TaskPlacement]) -> None:
        if self._lifted:  # (``restore`` recomputes the holds from what is free then)
            self.cluster.release(placements)
            return
        nodes = self.touching(placements)
        self.unhold(nodes)
        self.cluster.release(placements)
        self.hold(nodes)

    def occupy(self, placements: Sequence[TaskPlacement]) -> None:
        if self._lifted:
            self.cluster.occupy(placements)
            return
        nodes = self.touching(placements)
        self.unhold(nodes)
        self.cluster.occupy(placements)
        self.hold(nodes)

    def place_unheld(self, job: PendingJob, pool: str | None) -> tuple[TaskPlacement, ...] | None:
        """Place ``job`` with every hold lifted (for a job that ends before the reservation);
        the holds stay lifted until someone needs the held view (``restore``)."""
        self.lift()
        return self.cluster.try_place(job, pool)

    def keep_short(self, placements: Sequence[TaskPlacement]) -> None:
        """Record that ``placements`` (made with the holds on) end before the reservation.
        They leave the slack whole, so what a long job may use now on their nodes is
        ``min(free now, slack)``: the holds there are recomputed from what is free now.
        (Left as they were, they showed long jobs less than that until a trial lifted and
        restored them, and a pass's decisions depended on which trials it had made.)"""
        if not self._lifted:
            nodes = self.touching(placements)
            self.unhold(nodes)
            self.hold(nodes)

    def keep_long(self, placements: Iterable[TaskPlacement]) -> None:
        """Record that ``placements`` (made with the holds on) still run at the reservation."""
        for p in placements:
            slack = self._slack.get(p.node)
            if slack is not None:
                slack[0] -= p.resources.cpu_milli
                slack[1] -= p.resources.memory
                self._slack_gpus[p.node].difference_update(p.gpu_indices)


class Board:
    """The pass's cluster as every rule sees it: backfill holds kept right through changes.

    All changes to the cluster after the first reservation go through here, so
    that the reserved nodes always show ``min(free now, slack)``.  It also
    remembers which job shapes failed to fit: free room only shrinks during a
    pass (admissions, holds, preemption promises), so a shape that did not fit
    will not fit later in the pass either, and 10,000 blocked elements of one
    array cost one placement attempt, not 10,000.
    """

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.guard: Guard | None = None
        self._failed_held: set[tuple[str | None, int, int, int, int]] = set()
        self._failed_unheld: set[tuple[str | None, int, int, int, int]] = set()
        # Bumped by every change made through the board; a shape that fitted unheld at
        # generation g still fits while nothing changed (blocked jobs change nothing), so
        # a queue of jobs behind the reservation costs one trial per shape, not per job.
        self._generation = 0
        self._fitted_unheld: dict[tuple[str | None, int, int, int, int], int] = {}
        self._fitted_held: dict[tuple[str | None, int, int, int, int], int] = {}

    @property
    def failures(self) -> int:
        """Grows whenever a shape is found not to fit (held or unheld view)."""
        return len(self._failed_held) + len(self._failed_unheld)

    def failed_held(self, shape: Shape) -> bool:
        """Whether ``shape`` was found not to fit in the held view in this pass."""
        return shape in self._failed_held

    def failed_unheld(self, shape: Shape) -> bool:
        return shape in self._failed_unheld

    @property
    def generation(self) -> int:
        """Changes whenever the cluster, the holds or the slack change through the board."""
        return self._generation

    def start_guard(self, reservation: Reservation) -> None:
        self._failed_unheld = set(self._failed_held)
        self._generation += 1
        self.guard = Guard(self._cluster, reservation)

    def add_reservation(self, reservation: Reservation) -> None:
        """One more reservation after the head's (holds only grow: the failure caches of
        the held view stay true, and the unheld view does not change)."""
        assert self.guard is not None
        self._generation += 1
        self.guard.add(reservation)

    @property
    def cluster(self) -> Cluster:
        """The cluster in the held view (holds put back if a trial had lifted them)."""
        if self.guard is not None:
            self.guard.restore()
        return self._cluster

    def unheld(self) -> Cluster:
        """The cluster with every hold lifted (until the held view is asked for again)."""
        if self.guard is not None:
            self.guard.lift()
        return self._cluster

    def place(
        self, job: PendingJob, pool: str | None = None, *, short: bool = False
    ) -> tuple[TaskPlacement, ...] | None:
        """Place ``job`` for good; ``short``: it ends before the reservation (holds may lift)."""
        r = job.per_task
        shape = (job.pool if pool is None else pool, r.cpu_milli, r.memory, r.gpu, job.tasks)
        # A job holding fixed ports fits where its ports are free, which its shape does not
        # say: it neither reads nor feeds the failure caches.
        failed_held = self._failed_held if not job.host_ports else set()
        failed_unheld = self._failed_unheld if not job.host_ports else set()
        if shape not in failed_held:
            placed = self.cluster.try_place(job, pool)
            if placed is not None:
                self._generation += 1
                return placed
            failed_held.add(shape)
        if short and self.guard is not None and shape not in failed_unheld:
            placed = self.guard.place_unheld(job, pool)
            if placed is not None:
                self._generation += 1
                return placed
            failed_unheld.add(shape)
        return None

    def fits_held(self, job: PendingJob) -> bool:
        """Whether ``job`` would fit now in the held view (a trial: nothing changes); a
        failure is remembered as ``place`` remembers it."""
        r = job.per_task
        shape = (job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks)
        cached = not job.host_ports  # (see ``place``)
        if cached and shape in self._failed_held:
            return False
        if cached and self._fitted_held.get(shape) == self._generation:
            return True
        cluster = self.cluster
        placed = cluster.try_place(job)
        if placed is None:
            if cached:
                self._failed_held.add(shape)
            return False
        cluster.release(placed)  # (the very state it had: the holds stay right)
        if cached:
            self._fitted_held[shape] = self._generation
        return True

    def fits_unheld(self, job: PendingJob) -> bool:
        """Whether ``job`` would fit now if the reservation's holds were lifted (nothing kept)."""
        if self.guard is None:
            return False
        r = job.per_task
        shape = (job.pool, r.cpu_milli, r.memory, r.gpu, job.tasks)
        cached = not job.host_ports  # (see ``place``)
        if cached and shape in self._failed_unheld:
            return False
        if cached and self._fitted_unheld.get(shape) == self._generation:
            return True
        placed = self.guard.place_unheld(job, None)
        if placed is None:
            if cached:
                self._failed_unheld.add(shape)
            return False
        self.release(placed)  # (back as it was: the trial leaves no change)
        if cached:
            self._fitted_unheld[shape] = self._generation
        return True

    def try_place(self, job: PendingJob) -> tuple[TaskPlacement, ...] | None:
        """Place ``job`` in the current (held) view, without the failure cache (for trials)."""
        placed = self.cluster.try_place(job)
        if placed is not None:
            self._generation += 1
        return placed

    def keep(self, placements: Sequence[TaskPlacement], *, short: bool) -> None:
        """``placements`` stay: a job that runs past the reservation uses up its slack."""
        self._generation += 1
        if self.guard is None:
            return
        if short:
            self.guard.keep_short(placements)
        else:
            self.guard.keep_long(placements)

    def release(self, placements: Sequence[TaskPlacement]) -> None:
        self._generation += 1
        if self.guard is None:
            self.cluster.release(placements)
        else:
            self.guard.release(placements)

    def occupy(self, placements: Sequence[TaskPlacement]) -> None:
        self._generation += 1
        if self.guard is None:
            self.cluster.occupy(placements)
        else:
            self.guard.occupy(placements)
