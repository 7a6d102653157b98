"""Can a job ever run? Checked against empty nodes and the tenant's hard quota.

A job that cannot run even when the whole cluster is idle would wait forever
and, worse, could hold up the queue behind it.  The scheduler reports such jobs
as ``NEVER`` (they do not block anyone), and the API calls
``never_runs_reason`` at submit time to refuse them with the same words.

A job holding fixed ports (``host_ports``, a service's ``port: N``) puts at most
one task on a node: a gang of them needs as many nodes as tasks that can each
take one, else it is ``NEVER`` with the port named.

The node part of the answer depends only on (pool, per-task request, task
count, allowed nodes, fixed ports), so ``Feasibility`` caches it: a queue of
100,000 jobs usually has a few dozen distinct shapes, and each shape costs at
most one scan of the nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import is_

from virtuai.domain.resources import RESOURCE_NAMES, Node, Resources, format_amount
from virtuai.domain.sites import is_site_pool
from virtuai.domain.tenancy import Quota
from virtuai.scheduler.snapshot import PendingJob

__all__ = ["Feasibility", "never_runs_reason", "quota_never_reason", "usable_gpus"]

_Shape = tuple[int, int, int]  # cpu_milli, memory, gpu of one task
_Key = tuple[str | None, _Shape, int, frozenset[str] | None, frozenset[int]]


def usable_gpus(node: Node) -> int:
    """GPUs a node can hand out: declared capacity, but only as many as it has devices.

    Placement gives every GPU task concrete device indices, so a GPU that is
    counted in ``capacity`` but has no ``GpuDevice`` could never be assigned.
    """
    return min(node.capacity.gpu, len(node.gpus))


def _tasks_fitting(free: _Shape, need: _Shape, limit: int) -> int:
    """How many tasks of ``need`` fit in ``free`` (capped at ``limit``; 0-requests never bind)."""
    fit = limit
    for have, want in zip(free, need, strict=True):
        if want > 0:
            fit = min(fit, have // want) if have > 0 else 0
    return fit


class Feasibility:
    """Answers "can this job ever run?" for one set of nodes, with a per-shape cache."""

    _last: tuple[list[Node], Feasibility] | None = None

    @classmethod
    def reuse(cls, nodes: list[Node]) -> Feasibility:
        """The last one made by ``reuse`` if ``nodes`` are the very same objects (the
        answers depend on the nodes alone), else a new one."""
        last = cls._last
        if last is not None:
            known, feasibility = last
            # (map over operator.is_: the check runs every pass over thousands of nodes)
            if known is nodes or (len(known) == len(nodes) and all(map(is_, known, nodes))):
                return feasibility
        feasibility = cls(nodes)
        cls._last = (nodes, feasibility)
        return feasibility

    def __init__(self, nodes: Iterable[Node]) -> None:
        nodes_list = list(nodes)
        # Biggest nodes first, so that the scans below usually stop at once.
        shapes = sorted(
            (
                (n.capacity.cpu_milli, n.capacity.memory, usable_gpus(n), n.pool, n.name)
                for n in nodes_list
            ),
            key=lambda s: (-s[2], -s[0], -s[1], s[4]),
        )
        self._by_pool: dict[str | None, list[_Shape]] = {None: []}
        for cpu, memory, gpu, pool, _name in shapes:
            if not is_site_pool(pool):  # a job that names no pool never lands on a site
                self._by_pool[None].append((cpu, memory, gpu))
            self._by_pool.setdefault(pool, []).append((cpu, memory, gpu))
        self._largest: dict[str | None, _Shape] = {
            pool: (max(s[0] for s in known), max(s[1] for s in known), known[0][2])
            for pool, known in self._by_pool.items()
            if known
        }
        self._cache: dict[_Key, str | None] = {}
        self._held: dict[tuple[str, _Shape, int], int] = {}  # ``tasks_held``'s
        self._nodes = {n.name: n for n in nodes_list}
        self.pool_of: dict[str, str] = {n.name: n.pool for n in nodes_list}  # read only

    def tasks_held(self, pool: str, job: PendingJob) -> int:
        """How many of ``job``'s tasks the nodes of ``pool`` hold when idle (at most all;
        cached per shape, as ``node_reason``)."""
        r = job.per_task
        need = (r.cpu_milli, r.memory, r.gpu)
        key = (pool, need, job.tasks)
        held = self._held.get(key)
        if held is None:
            held = 0
            for shape in self._by_pool.get(pool, ()):
                held += _tasks_fitting(shape, need, job.tasks - held)
                if held >= job.tasks:
                    break
            self._held[key] = held
        return held

    def reason(self, job: PendingJob, quota: Quota, tenant: str) -> str | None:
        """Why ``job`` can never run, in plain words, or ``None`` if it could some day."""
        node_reason = self.node_reason(job)
        if node_reason is not None:
            return node_reason
        return quota_never_reason(job.total, quota, tenant)

    def shape_never(self, shape: tuple[str | None, int, int, int, int]) -> bool:
        """Whether a job of ``shape`` (pool, per-task cpu, memory, gpu, tasks) can never run."""
        pool, cpu, memory, gpu, tasks = shape
        reason = self._cache.get((pool, (cpu, memory, gpu), tasks, None, frozenset()), False)
        if reason is not False:  # (``node_reason``'s cache: asked every pass, it is there)
            return reason is not None
        probe = PendingJob("", "", 0, 0.0, 0, Resources(cpu, memory, gpu), tasks, pool)
        return self.node_reason(probe) is not None

    def node_reason(self, job: PendingJob) -> str | None:
        """Why ``job`` could not run even on idle nodes (quotas aside), or ``None``."""
        per_task = job.per_task
        shape = (per_task.cpu_milli, per_task.memory, per_task.gpu)
        key = (job.pool, shape, job.tasks, job.allowed_nodes, job.host_ports)
        try:
            return self._cache[key]
        except KeyError:
            if job.allowed_nodes is None:
                reason = self._node_reason(job.pool, shape, job.tasks)
            else:
                reason = self._targeted_reason(job.pool, shape, job.tasks, job.allowed_nodes)
            if reason is None and job.host_ports and job.tasks > 1:
                reason = self._ports_reason(job, shape)
            self._cache[key] = reason
            return reason

    def _ports_reason(self, job: PendingJob, need: _Shape) -> str | None:
        """A task holding fixed ports has its node to itself (no two holders of a port on a
        node): a gang needs as many nodes that can each take one of its tasks."""
        pool, allowed = job.pool, job.allowed_nodes
        fit = sum(
            1
            for n in self._nodes.values()
            if (n.pool == pool if pool is not None else not is_site_pool(n.pool))
            and (allowed is None or n.name in allowed)
            and _tasks_fitting((n.capacity.cpu_milli, n.capacity.memory, usable_gpus(n)), need, 1)
        )
        if fit >= job.tasks:
            return None
        ports = sorted(job.host_ports)
        named = f"port {ports[0]}" if len(ports) == 1 else "ports " + ", ".join(map(str, ports))
        where = "" if pool is None else f" in pool {pool}"
        nodes = "1 node" if fit == 1 else f"{fit} nodes"
        return (
            f"holds {named} on its node, so each of its {job.tasks} tasks needs a node of "
            f"its own, but only {nodes}{where} can take one of its tasks"
        )

    def _targeted_reason(
        self, pool: str | None, need: _Shape, tasks: int, allowed: frozenset[str]
    ) -> str | None:
        """The same answer over the nodes a targeting job may use (class, labels)."""
        nodes = [
            self._nodes[name]
            for name in sorted(allowed)
            if name in self._nodes and (pool is None or self._nodes[name].pool == pool)
        ]
        if not nodes:
            return "no node matches its node class and constraints"
        return Feasibility(nodes)._node_reason(pool, need, tasks)

    def _node_reason(self, pool: str | None, need: _Shape, tasks: int) -> str | None:
        if tasks < 1:
            return f"asks for {tasks} tasks; a job needs at least 1"
        if min(need) < 0:
            return "asks for a negative amount of a resource"
        nodes = self._by_pool.get(pool, [])
        where = "" if pool is None else f" in pool {pool}"
        if not nodes:
            return f"asks for pool {pool} but it has no nodes" if pool else "there are no nodes"
        largest = self._largest[pool]
        for i, name in enumerate(RESOURCE_NAMES):
            if need[i] > largest[i]:
                return (
                    f"asks for {format_amount(name, need[i])} {name} per task "
                    f"but the largest node{where} has {format_amount(name, largest[i])}"
                )
        per_task = Resources(*need)
        fits = 0
        for shape in nodes:
            fits += _tasks_fitting(shape, need, tasks - fits)
            if fits >= tasks:
                return None
        if fits == 0:
            return (
                f"asks for {per_task.describe()} per task but no single node{where} has all of that"
            )
        return (
            f"needs {tasks} tasks of {per_task.describe()} "
            f"but even when idle the nodes{where} hold only {fits} such tasks"
        )


def quota_never_reason(total: Resources, quota: Quota, tenant: str) -> str | None:
    """Why a job asking for ``total`` can never fit in ``tenant``'s quota, or ``None``."""
    for name in RESOURCE_NAMES:
        limit = quota.limit_of(name)
        amount = total.amount(name)
        if limit is not None and amount > limit:
            return (
                f"needs {format_amount(name, amount)} {name} in total "
                f"but tenant {tenant} has a quota of {format_amount(name, limit)} {name}"
            )
    return None


def never_runs_reason(
    job: PendingJob, nodes: Sequence[Node], quota: Quota, tenant: str
) -> str | None:
    """Why ``job`` can never run on ``nodes`` (even idle) within ``quota``; ``None`` if it can.

    The API uses this at submit time to refuse such a request outright, and
    ``schedule()`` uses the same words (prefixed "can never run: ") for ``NEVER``.
    Node limits are checked before the quota: a physical limit is the more
    useful thing to tell the user.
    """
    return Feasibility(nodes).reason(job, quota, tenant)
