"""The cluster's free capacity during one scheduling pass, and GPU-aware best-fit placement.

``Cluster`` is a mutable working copy built from the snapshot's ``NodeState``s:
every placement it makes is subtracted at once, so later tasks of the same gang
and later jobs of the same pass see it.  The snapshot itself is never changed.

Best fit, per task: among the nodes of the job's pool that have room, take the
one left with the fewest free GPUs, then the least free CPU, then the least
free memory, then the first name.  Putting CPU-only work on GPU-less (or
GPU-full) nodes first keeps whole GPU nodes free for GPU jobs, and packing
tightly keeps large holes for large jobs.  The lowest free device indices are
handed out, so placements are reproducible.

Fixed ports (``PendingJob.host_ports``, a service's ``port: N``) are a per-node
resource of their own: a node holds a set of ports, a job asking for port N
goes only where N is not held, and each of its tasks takes N on its node, so
no two tasks of a node ever hold one port (Nomad's static ports, Kubernetes'
``hostPort``).  Such jobs are few and small: they take the plain scan of
``_try_place_on`` rather than the indexes.

Speed: a pass may admit tens of thousands of tasks over thousands of nodes, so
a linear scan per task is too slow.  Nodes are indexed by (pool, free GPUs),
each bucket a ``FitList`` sorted by (free cpu, free memory, name).  The best
node is the first entry, in the first bucket with enough GPUs, with enough cpu
and memory: the sort order *is* the best-fit order.  Each placement moves one
node between buckets (a delete and an insert in its pool's index and in the
all-pools index).

Building the indexes is a walk over every node, the largest fixed cost of a
pass on a big cluster.  ``Cluster.reuse`` keeps the last pass's cluster: nodes
whose ``NodeState`` is the very same object as last time, and that the pass did
not touch, are kept as they are; only the others are rebuilt.  A pass that
mutated the cluster hands it back with ``done()``; the next ``reuse`` puts the
touched nodes back as their (possibly new) ``NodeState`` says, once each.  One
thread at a time uses the kept cluster (the others build their own), and a
pass that fails does not hand it back, so a half-updated cluster is never
reused.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import compress
from operator import is_not
from typing import ClassVar

from virtuai.domain.resources import Node, Resources
from virtuai.domain.sites import is_site_pool
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.feasibility import usable_gpus
from virtuai.scheduler.fitlist import Entry, FitList
from virtuai.scheduler.keeper import Keeper, Kept
from virtuai.scheduler.snapshot import NodeState, PendingJob

__all__ = ["Cluster", "NodeFree"]


class NodeFree:
    """One node's free capacity, mutated as tasks are placed on it and released from it."""

    __slots__ = (
        "_devices",
        "_node",
        "accepting",
        "cpu",
        "free_gpus",
        "gpu",
        "gpu_budget",
        "memory",
        "name",
        "number",
        "pool",
        "ports",
    )

    def __init__(self, number: int, state: NodeState) -> None:
        node = state.node
        self.number = number
        self.name = node.name
        self.pool = node.pool
        self._node: Node | None = None
        self._devices: frozenset[int] = frozenset()
        self.load(state)

    def load(self, state: NodeState) -> None:
        """Take the free capacity ``state`` says (a new pass on a kept cluster)."""
        node = state.node
        if node is not self._node:  # (a kept cluster reloads a node most passes)
            self._node, self._devices = node, frozenset(g.index for g in node.gpus)
        free = state.free
        self.accepting = state.accepting
        self.ports = state.ports  # fixed ports held here (``host_ports``); replaced, not mutated
        self.cpu = free.cpu_milli
        self.memory = free.memory
        # Two views of GPUs that a consistent snapshot keeps equal; trust the smaller.
        self.gpu_budget = usable_gpus(node) - state.allocated.gpu
        self.free_gpus = sorted(self._devices - state.busy_gpus)
        self.gpu = 0
        self.settle()

    def settle(self) -> None:
        """Recompute ``gpu`` (the GPUs it can still hand out) after a change."""
        self.gpu = max(0, min(self.gpu_budget, len(self.free_gpus)))

    @property
    def free(self) -> Resources:
        return Resources(max(0, self.cpu), max(0, self.memory), self.gpu)

    def entry(self) -> Entry:
        return (self.cpu, self.memory, self.name, self.number)


class _Index:
    """Nodes of one pool (or of all pools) bucketed by free GPUs, each bucket in best-fit order."""

    __slots__ = ("buckets", "cpu", "gpu", "max_gpu", "memory")

    def __init__(self) -> None:
        self.buckets: dict[int, FitList] = {}
        self.max_gpu = 0
        # Free totals over the nodes (negatives clamped), for a quick "cannot fit" answer.
        self.cpu = 0
        self.memory = 0
        self.gpu = 0

    def add(self, node: NodeFree) -> None:
        gpu = node.gpu
        bucket = self.buckets.get(gpu)
        if bucket is None:
            bucket = self.buckets[gpu] = FitList()
        cpu, memory = node.cpu, node.memory
        bucket.add((cpu, memory, node.name, node.number))
        self.max_gpu = max(self.max_gpu, gpu)
        # (Conditionals, not max(): this runs for every task placed and released.)
        self.cpu += cpu if cpu > 0 else 0
        self.memory += memory if memory > 0 else 0
        self.gpu += gpu

    def remove(self, node: NodeFree, was: tuple[int, int, int] | None = None) -> None:
        """Take ``node`` out, as indexed now, or as it was when its free (cpu, memory, gpu)
        were ``was``."""
        cpu, memory, gpu = (node.cpu, node.memory, node.gpu) if was is None else was
        self.buckets[gpu].remove((cpu, memory, node.name, node.number))
        self.cpu -= cpu if cpu > 0 else 0
        self.memory -= memory if memory > 0 else 0
        self.gpu -= gpu

    def best(self, cpu: int, memory: int, gpu: int) -> int | None:
        """Slot number of the best-fitting node with at least this much free, or ``None``."""
        for level in range(gpu, self.max_gpu + 1):
            bucket = self.buckets.get(level)
            if bucket:
                entry = bucket.first_fit(cpu, memory)
                if entry is not None:
                    return entry[3]
        return None


class Cluster(Kept):
    """Free capacity of every node during a pass; places jobs and can take them back."""

    _keeper: ClassVar[Keeper[Cluster]] = Keeper()  # the last pass's cluster, to ``reuse``
    shortfall: int | None
    _states: list[NodeState]
    _given: list[NodeState]
    _given_tuple: Sequence[NodeState] | None  # the very tuple given, if it was one
    given_nodes: list[Node]

    @classmethod
    def reuse(
        cls,
        nodes: Sequence[NodeState],
        since: tuple[Sequence[NodeState], Collection[int]] | None = None,
    ) -> Cluster:
        """A cluster for ``nodes``: the last one handed back by ``done()``, brought up to
        date, when this thread may take it and the nodes are the same; else a new one.
        ``since``: ``Snapshot.nodes_since``."""
        held, kept = cls._keeper.take()
        if not held:
            return cls(nodes)
        if kept is None or not kept._refresh(nodes, since):
            kept = cls(nodes)
        kept._shared = True
        return kept

    def done(self) -> None:
        """The pass is over: keep this cluster for the next.  The nodes it touched are put
        back by the next ``_refresh`` (at most once per node, with the node's new state if
        it changed meanwhile, as placed nodes do)."""
        if self._shared:
            self.shortfall = None
        super().done()

    def _refresh(
        self, nodes: Sequence[NodeState], since: tuple[Sequence[NodeState], Collection[int]] | None
    ) -> bool:
        """Bring the kept cluster up to ``nodes``; ``False`` if they are other nodes."""
        given, order = self._given, self._order
        if order is None or len(nodes) != len(given):
            return False
        # Only the positions whose state is another object: none if this is the very tuple
        # of last time, those ``since`` names if it starts from that tuple, else found by
        # comparing every position (at C speed: this runs every pass over thousands of
        # nodes, of which a pass changes a few).
        dirty = self._touched  # changed by the last pass and not put back yet
        renamed = False
        last = self._given_tuple
        same = nodes is last
        changed: Iterable[int]
        if same:
            changed = ()
        elif since is not None and last is not None and since[0] is last:
            changed = sorted(since[1])
        else:
            changed = compress(range(len(nodes)), map(is_not, nodes, given))
        for i in changed:
            state, k = nodes[i], order[i]
            was = self._states[k]
            if state.node is not was.node:
                if state.node != was.node:
                    return False
                renamed = True  # an equal node in another object
            self._reset(k, state)
            dirty.discard(k)
        if renamed:
            self.given_nodes = [state.node for state in nodes]
        for k in sorted(dirty):
            self._reset(k, self._states[k])
        dirty.clear()
        if not same:
            self._given = list(nodes)
            self._given_tuple = nodes if type(nodes) is tuple else None  # (a list may change)
        return True

    def _reset(self, number: int, state: NodeState) -> None:
        node = self._nodes[number]
        indexes = self._indexes_of(node)
        was = (node.cpu, node.memory, node.gpu)
        accepting = node.accepting
        node.load(state)
        self._states[number] = state
        if node.accepting == accepting and (node.cpu, node.memory, node.gpu) == was:
            return  # same entries in the same indexes (half the nodes a pass touches)
        for index in indexes:
            index.remove(node, was)
        # Indexes of the new state: a node cordoned or uncordoned since leaves or joins them.
        for index in self._indexes_of(node):
            index.add(node)

    def __init__(self, nodes: Iterable[NodeState]) -> None:
        # After a ``try_place`` that failed while placing tasks: how many tasks did not fit
        # (exact, by the greedy argument in ``try_place``); ``None`` if it gave up earlier.
        self.shortfall = None
        given = list(nodes)
        self._given = given  # the states in input order, to spot changed ones (``_refresh``)
        self._given_tuple = nodes if type(nodes) is tuple else None
        # Their nodes, in input order: the very same list while the nodes are the very same
        # objects, so that what is kept over them (``Feasibility.reuse``, ``capacity_of``)
        # knows them without a walk.  Read only.
        self.given_nodes = [state.node for state in given]
        ranked = sorted(range(len(given)), key=lambda i: given[i].node.name)
        ordered = [given[i] for i in ranked]
        self._states = ordered
        # Input position -> node number, valid while the input keeps its order (reuse).
        order = [0] * len(given)
        for number, i in enumerate(ranked):
            order[i] = number
        self._order: list[int] | None = order
        self._touched: set[int] = set()
        self._nodes = [NodeFree(i, state) for i, state in enumerate(ordered)]
        self._by_name = {n.name: n for n in self._nodes}
        self._indexes: dict[str | None, _Index] = {None: _Index()}
        for node in self._nodes:
            for index in self._indexes_of(node):
                index.add(node)

    def _indexes_of(self, node: NodeFree) -> tuple[_Index, ...]:
        if not node.accepting:
            return ()  # cordoned, draining or lost: in the books, never offered
        index = self._indexes.get(node.pool)
        if index is None:
            index = self._indexes[node.pool] = _Index()
        if is_site_pool(node.pool):
            return (index,)  # a job that names no pool never lands on a site
        return self._indexes[None], index

    def node(self, name: str) -> NodeFree:
        """One node's working state by name. Read only: change it through the methods."""
        return self._by_name[name]

    def pools(self) -> list[str]:
        """The pools that have nodes, by name (a site's pools only if it is asked for)."""
        return sorted(p for p in self._indexes if p is not None and not is_site_pool(p))

    def port_free_nodes(self, job: PendingJob) -> list[NodeFree]:
        """The accepting nodes ``job`` may use on which none of its fixed ports is held."""
        allowed, ports = job.allowed_nodes, job.host_ports
        return [
            n
            for n in self._nodes
            if n.accepting
            and (allowed is None or n.name in allowed)
            and (job.pool is None or n.pool == job.pool)
            and (job.pool is not None or not is_site_pool(n.pool))
            and n.ports.isdisjoint(ports)
        ]

    def nodes(self, pool: str | None = None) -> Iterator[NodeFree]:
        """The nodes of ``pool`` (all if ``None``), by name. Read only: do not mutate."""
        return (n for n in self._nodes if pool is None or n.pool == pool)

    def offering(self, pool: str | None, gpu: int = 0) -> Iterator[NodeFree]:
        """The nodes where a job of ``pool`` may be placed (``None``: a job that names no
        pool; accepting nodes only) with at least ``gpu`` GPUs free now, in no set order.
        Read from the indexes: on a busy cluster, a few of thousands for a GPU job."""
        index = self._indexes.get(pool)
        if index is None:
            return
        nodes = self._nodes
        for level, bucket in index.buckets.items():
            if level >= gpu:
                for number in bucket.numbers():
                    yield nodes[number]

    def offered(self, name: str, pool: str | None) -> NodeFree | None:
        """Node ``name`` if it is one of those ``offering`` walks for ``pool`` (whatever it
        has free: it is in that pool's index, as ``_indexes_of`` files it), else ``None``.
        Spelled out, not through the index: backfill asks this for every release it
        replays."""
        node = self._by_name.get(name)
        if node is None or not node.accepting:
            return None
        if pool is None:
            return None if is_site_pool(node.pool) else node
        return node if node.pool == pool else None

    def free_total(self, pool: str | None = None) -> Resources:
        """Free resources summed over the nodes of ``pool`` (all if ``None``)."""
        index = self._indexes.get(pool)
        if index is None:
            return Resources()
        return Resources(index.cpu, index.memory, index.gpu)

    def try_place(
        self, job: PendingJob, pool: str | None = None
    ) -> tuple[TaskPlacement, ...] | None:
        """Place every task of ``job`` (all or nothing) and keep them; ``None`` if it does not fit.

        Tasks are placed one by one, each by best fit on what the earlier ones
        left; for tasks of one shape this greedy order finds room whenever room
        exists, since a task on a node only ever uses up that node's own room.
        ``pool`` narrows a job that names no pool to one pool.
        """
        if job.allowed_nodes is not None or job.host_ports:
            return self._try_place_on(job, job.pool if pool is None else pool)
        index = self._indexes.get(job.pool if pool is None else pool)
        per_task = job.per_task
        cpu, memory, gpu = per_task.cpu_milli, per_task.memory, per_task.gpu
        tasks = job.tasks
        self.shortfall = None
        if index is None or tasks < 1 or min(cpu, memory, gpu) < 0:
            return None  # feasibility reports these as NEVER; do not corrupt the books
        if cpu * tasks > index.cpu or memory * tasks > index.memory or gpu * tasks > index.gpu:
            return None
        placed: list[TaskPlacement] = []
        for task in range(tasks):
            number = index.best(cpu, memory, gpu)
            if number is None:
                self.release(placed)
                self.shortfall = tasks - task
                return None
            node = self._nodes[number]
            placed.append(TaskPlacement(task, node.name, per_task, self._take(node, per_task)))
        return tuple(placed)

    def _try_place_on(self, job: PendingJob, pool: str | None) -> tuple[TaskPlacement, ...] | None:
        """``try_place`` for a job that targets some nodes (class, labels) or holds fixed
        ports: a plain best-fit scan over those nodes, since the indexes are per pool only
        (and know no ports)."""
        allowed = job.allowed_nodes
        ports = job.host_ports
        per_task = job.per_task
        self.shortfall = None
        if job.tasks < 1 or min(per_task.cpu_milli, per_task.memory, per_task.gpu) < 0:
            return None
        candidates = [
            n
            for n in self._nodes
            if n.accepting
            and (allowed is None or n.name in allowed)
            and (pool is None or n.pool == pool)
            # A replica's port is a port of this platform's machines: never a site's node.
            and not (ports and pool is None and is_site_pool(n.pool))
        ]
        held = tuple(sorted(ports))
        placed: list[TaskPlacement] = []
        for task in range(job.tasks):
            fitting = [
                n
                for n in candidates
                if n.cpu >= per_task.cpu_milli
                and n.memory >= per_task.memory
                and n.gpu >= per_task.gpu
                and n.ports.isdisjoint(ports)  # (a task placed here took them: one per node)
            ]
            if not fitting:
                self.release(placed)
                self.shortfall = job.tasks - task
                return None
            node = min(fitting, key=lambda n: (n.gpu, n.cpu, n.memory, n.name))
            devices = self._take(node, per_task)
            node.ports = node.ports.union(held)
            placed.append(TaskPlacement(task, node.name, per_task, devices, held))
        return tuple(placed)

    def release(self, placements: Iterable[TaskPlacement]) -> None:
        """Give back what ``placements`` hold (to undo a gang, or to model a preemption)."""
        for placement in placements:
            node = self._by_name[placement.node]
            self._touched.add(node.number)
            indexes = self._indexes_of(node)
            for index in indexes:
                index.remove(node)
            node.cpu += placement.resources.cpu_milli
            node.memory += placement.resources.memory
            node.gpu_budget += placement.resources.gpu
            for gpu_index in placement.gpu_indices:
                insort(node.free_gpus, gpu_index)
            if placement.host_ports:
                node.ports = node.ports.difference(placement.host_ports)
            node.settle()
            for index in indexes:
                index.add(node)

    def occupy(self, placements: Iterable[TaskPlacement]) -> None:
        """Take exactly what ``placements`` hold (the inverse of ``release``).

        Used to put back the jobs a preemption trial released, and to hold
        resources that must stay unused for the rest of the pass (victims still
        stopping, backfill reservations).  The devices named must be free.
        """
        for placement in placements:
            node = self._by_name[placement.node]
            self._touched.add(node.number)
            indexes = self._indexes_of(node)
            for index in indexes:
                index.remove(node)
            node.cpu -= placement.resources.cpu_milli
            node.memory -= placement.resources.memory
            node.gpu_budget -= placement.resources.gpu
            for gpu_index in placement.gpu_indices:
                node.free_gpus.remove(gpu_index)
            if placement.host_ports:
                node.ports = node.ports.union(placement.host_ports)
            node.settle()
            for index in indexes:
                index.add(node)

    def _take(self, node: NodeFree, per_task: Resources) -> tuple[int, ...]:
        self._touched.add(node.number)
        indexes = self._indexes_of(node)
        for index in indexes:
            index.remove(node)
        node.cpu -= per_task.cpu_milli
        node.memory -= per_task.memory
        node.gpu_budget -= per_task.gpu
        devices = tuple(node.free_gpus[: per_task.gpu])
        del node.free_gpus[: per_task.gpu]
        node.settle()
        for index in indexes:
            index.add(node)
        return devices
