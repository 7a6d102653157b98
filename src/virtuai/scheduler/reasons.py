"""Plain-words pending reasons that need the cluster's state to write.

Users read these as "why is my job not running?", so each one says what the
job needs, what is free, and which resource is short.  They are built only for
the few jobs that need them (one capacity-blocked head per pass), so they may
afford a scan of the nodes.
"""

from __future__ import annotations

from dataclasses import replace

from virtuai.domain.resources import RESOURCE_NAMES, Resources, format_amount
from virtuai.domain.units import format_duration
from virtuai.scheduler.placement import Cluster
from virtuai.scheduler.snapshot import PendingJob

__all__ = [
    "NEVER_PREFIX",
    "PORT_PREFIX",
    "capacity_reason",
    "expected_in",
    "preemption_reason",
    "queue_reason",
    "reserved_reason",
]

NEVER_PREFIX = "can never run: "
# How the reason of a job waiting for its fixed ports begins ("port 8000", "ports 80, 81").
PORT_PREFIX = "waiting for port"


def _describe(amounts: Resources, *, gpu: bool) -> str:
    parts = [f"{name}={format_amount(name, amounts.amount(name))}" for name in RESOURCE_NAMES]
    return " ".join(parts if gpu else parts[:2])


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def capacity_reason(job: PendingJob, cluster: Cluster, *, detailed: bool = True) -> str:
    """Why ``job`` does not fit on the free capacity now, naming the short resource
    (``detailed=False``: without the scan of the nodes that says how the room is spread)."""
    per_task, total = job.per_task, job.total
    if job.host_ports:
        return _port_reason(job, cluster, detailed=detailed)
    free = cluster.free_total(job.pool)
    gpu = total.gpu > 0
    where = f" in pool {job.pool}" if job.pool else ""
    head = (
        f"waiting for resources: needs {_describe(total, gpu=gpu)} in "
        f"{_count(job.tasks, 'task')}; free now{where}: {_describe(free, gpu=gpu)}"
    )
    short = [name for name in RESOURCE_NAMES if free.amount(name) < total.amount(name)]
    if short:
        return f"{head}; short of {', '.join(short)}"
    # Enough in total, but not where it is needed: the free room is fragmented.
    if not detailed:
        return f"{head}; but not on few enough nodes"
    largest = {name: 0 for name in RESOURCE_NAMES}
    fits = 0
    for node in cluster.nodes(job.pool):
        room = node.free
        for name in RESOURCE_NAMES:
            largest[name] = max(largest[name], room.amount(name))
        fits = min(job.tasks, fits + _tasks_in(room, per_task))
    short = [name for name in RESOURCE_NAMES if largest[name] < per_task.amount(name)]
    if short:
        wants = ", ".join(
            f"needs {format_amount(name, per_task.amount(name))} {name}, "
            f"at most {format_amount(name, largest[name])} free on one node"
            for name in short
        )
        return f"{head}; but no single node has room for one task ({wants})"
    if fits == 0:
        return f"{head}; but no node has {_describe(per_task, gpu=gpu)} free at once for one task"
    return f"{head}; but it is spread over the nodes so that only {fits} of {job.tasks} tasks fit"


def _port_reason(job: PendingJob, cluster: Cluster, *, detailed: bool) -> str:
    """Why a job holding fixed ports waits: the ports, or the room where they are free."""
    ports = sorted(job.host_ports)
    named = f"port {ports[0]}" if len(ports) == 1 else "ports " + ", ".join(map(str, ports))
    where = f" of pool {job.pool}" if job.pool else ""
    free = cluster.port_free_nodes(job)
    if not free:
        they = "it is" if len(ports) == 1 else "they are"
        return f"waiting for {named}: {they} taken on every node{where}"
    if len(free) < job.tasks:
        return (
            f"waiting for {named}: free on {_count(len(free), 'node')}{where}, "
            f"and each of its {job.tasks} tasks needs a node of its own"
        )
    rest = capacity_reason(replace(job, host_ports=frozenset()), cluster, detailed=detailed)
    return f"{rest} ({named} is free on {_count(len(free), 'node')})"


def _tasks_in(room: Resources, per_task: Resources) -> int:
    fit: int | None = None
    for name in RESOURCE_NAMES:
        want = per_task.amount(name)
        if want > 0:
            n = room.amount(name) // want
            fit = n if fit is None else min(fit, n)
    return 1 if fit is None else fit


def queue_reason(head: PendingJob) -> str:
    """Why a job that would fit its quota waits: strict order keeps ``head`` first."""
    return (
        f"waiting behind job {head.id} (priority {head.priority}), "
        "which is first in line and waiting for resources"
    )


def expected_in(start: float, now: float) -> str:
    """``in 01:20:00`` (or ``now``) for a pending reason."""
    return "now" if start <= now else f"in {format_duration(start - now)}"


def reserved_reason(head: PendingJob, start: float, now: float) -> str:
    """Why a job that would fit now waits under EASY backfill: it would delay ``head``."""
    wait = format_duration(max(0.0, start - now))
    return (
        f"waiting for resources reserved for job {head.id} (priority {head.priority}), "
        f"expected to start {expected_in(start, now)}; "
        f"with a time limit of at most {wait} it could start now"
    )


def preemption_reason(stopping: int) -> str:
    """Why a preemptor is not admitted in the pass that preempts for it."""
    if stopping == 0:
        return "waiting for room that preempted jobs will free when they stop"
    return f"waiting for {stopping} preempted job(s) to stop"
