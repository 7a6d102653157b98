"""Prometheus metrics (``GET /metrics``).

Two kinds, kept apart on purpose:

- **Computed from the database at scrape time** (``DatabaseCollector``): jobs by
  state and tenant, queue-wait and run-time histograms, admissions, preemptions
  and requeues (counted from ``job_events``), per-node allocation, per-tenant
  usage (from ``usage_records``), virtual clusters by state.  They are true on
  every replica, survive restarts and never drift from what the API shows.
- **Measured in this process** (``Metrics``): API latency and errors by route,
  scheduler pass duration.  Prometheus scrapes each replica and sums.

GPU utilization and memory come from NVML where there are NVIDIA GPUs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.units import MILLI
from virtuai.drivers.local.inventory import GpuStats, nvml_gpu_stats
from virtuai.store.db import transaction
from virtuai.store.inventory import load_node_states
from virtuai.store.models import JobEventRow, JobRow, TenantRow, UsageRow, VirtualClusterRow

# Seconds: a queue wait is seconds to days; a run the same.
WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)
RUN_BUCKETS = (10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SCHEDULER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class DatabaseCollector(Collector):
    """Every gauge and event counter, read in one transaction when Prometheus scrapes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        gpu_stats: Callable[[], list[GpuStats]] = nvml_gpu_stats,
    ) -> None:
        self.sessions = sessions
        self.gpu_stats = gpu_stats

    def collect(self) -> Iterator[Metric]:
        with transaction(self.sessions) as session:
            yield from _jobs(session)
            yield from _durations(session)
            yield from _events(session)
            yield from _nodes(session)
            yield from _usage(session)
            yield from _vclusters(session)
        yield from _gpus(self.gpu_stats())


def _jobs(session: Session) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("virtuai_jobs", "Jobs by tenant and state", labels=["tenant", "state"])
    pending = 0
    query = (
        select(TenantRow.name, JobRow.state, func.count())
        .select_from(JobRow)
        .join(TenantRow)
        .group_by(TenantRow.name, JobRow.state)
    )
    for tenant, state, count in session.execute(query):
        jobs.add_metric([tenant, state], count)
        pending += count if state == "pending" else 0
    yield jobs
    yield GaugeMetricFamily(
        "virtuai_scheduler_pending_jobs", "Jobs waiting for the scheduler", value=pending
    )


def _durations(session: Session) -> Iterator[Metric]:
    """Queue wait (submitted -> started) and run time (started -> finished) per tenant and
    priority class, as cumulative histograms over every job that got that far."""
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    runs: dict[tuple[str, str], list[float]] = defaultdict(list)
    query = (
        select(
            TenantRow.name,
            JobRow.priority_class,
            JobRow.submitted_at,
            JobRow.started_at,
            JobRow.finished_at,
        )
        .join(TenantRow)
        .where(JobRow.started_at.is_not(None))
    )
    for tenant, klass, submitted, started, finished in session.execute(query):
        key = (tenant, klass)
        assert started is not None
        waits[key].append(_seconds(submitted, started))
        if finished is not None:
            runs[key].append(_seconds(started, finished))
    yield _histogram(
        "virtuai_job_queue_wait_seconds",
        "Time from submission to start",
        waits,
        WAIT_BUCKETS,
    )
    yield _histogram("virtuai_job_run_seconds", "Time from start to end", runs, RUN_BUCKETS)


def _seconds(start: dt.datetime, end: dt.datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def _histogram(
    name: str,
    documentation: str,
    samples: dict[tuple[str, str], list[float]],
    buckets: Sequence[float],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["tenant", "class"])
    for key, values in sorted(samples.items()):
        counts = [(str(float(b)), float(sum(1 for v in values if v <= b))) for b in buckets]
        counts.append(("+Inf", float(len(values))))
        family.add_metric(list(key), counts, sum_value=sum(values))
    return family


_EVENTS = {
    "admissions": (None, "admitted", "Jobs admitted by the scheduler"),
    "preemptions": ("running", "preempting", "Running jobs preempted"),
    "requeues": ("preempting", "pending", "Preempted jobs put back in the queue"),
}


def _events(session: Session) -> Iterator[Metric]:
    conditions = [
        JobEventRow.to_state == to
        if frm is None
        else and_(JobEventRow.from_state == frm, JobEventRow.to_state == to)
        for frm, to, _ in _EVENTS.values()
    ]
    query = (
        select(TenantRow.name, JobEventRow.from_state, JobEventRow.to_state, func.count())
        .select_from(JobEventRow)
        .join(JobRow, JobRow.id == JobEventRow.job_id)
        .join(TenantRow, TenantRow.id == JobRow.tenant_id)
        .where(or_(*conditions))
        .group_by(TenantRow.name, JobEventRow.from_state, JobEventRow.to_state)
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for tenant, frm, to, count in session.execute(query):
        for kind, (want_from, want_to, _) in _EVENTS.items():
            if to == want_to and (want_from is None or frm == want_from):
                counts[(kind, tenant)] += count
    for kind, (_, _, documentation) in _EVENTS.items():
        family = CounterMetricFamily(f"virtuai_{kind}", documentation, labels=["tenant"])
        for (k, tenant), count in sorted(counts.items()):
            if k == kind:
                family.add_metric([tenant], count)
        yield family


def _nodes(session: Session) -> Iterator[Metric]:
    labels = ["node", "pool", "site"]
    families = {
        key: GaugeMetricFamily(f"virtuai_node_{key}", documentation, labels=labels)
        for key, documentation in (
            ("cpu_capacity", "CPUs the node offers"),
            ("cpu_allocated", "CPUs held by admitted work"),
            ("memory_capacity_bytes", "Memory the node offers"),
            ("memory_allocated_bytes", "Memory held by admitted work"),
            ("gpu_capacity", "GPUs the node offers"),
            ("gpu_allocated", "GPUs held by admitted work"),
        )
    }
    for state in load_node_states(session):
        node = state.node
        values = [node.name, node.pool, node.site]
        capacity, allocated = node.capacity, state.allocated
        families["cpu_capacity"].add_metric(values, capacity.cpu_milli / MILLI)
        families["cpu_allocated"].add_metric(values, allocated.cpu_milli / MILLI)
        families["memory_capacity_bytes"].add_metric(values, capacity.memory)
        families["memory_allocated_bytes"].add_metric(values, allocated.memory)
        families["gpu_capacity"].add_metric(values, capacity.gpu)
        families["gpu_allocated"].add_metric(values, allocated.gpu)
    yield from families.values()


def _usage(session: Session) -> Iterator[Metric]:
    families = {
        "cpu": CounterMetricFamily(
            "virtuai_usage_cpu_seconds", "CPU-seconds allocated to ended tasks", labels=["tenant"]
        ),
        "gpu": CounterMetricFamily(
            "virtuai_usage_gpu_seconds", "GPU-seconds allocated to ended tasks", labels=["tenant"]
        ),
        "memory": CounterMetricFamily(
            "virtuai_usage_memory_gib_seconds",
            "GiB-seconds of memory allocated to ended tasks",
            labels=["tenant"],
        ),
        "wall": CounterMetricFamily(
            "virtuai_usage_wall_seconds", "Wall-clock seconds of ended tasks", labels=["tenant"]
        ),
    }
    query = (
        select(
            TenantRow.name,
            func.sum(UsageRow.cpu_s),
            func.sum(UsageRow.gpu_s),
            func.sum(UsageRow.memory_gb_s),
            func.sum(UsageRow.wall_s),
        )
        .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
        .group_by(TenantRow.name)
    )
    for tenant, cpu, gpu, memory, wall in session.execute(query):
        families["cpu"].add_metric([tenant], float(cpu or 0))
        families["gpu"].add_metric([tenant], float(gpu or 0))
        families["memory"].add_metric([tenant], float(memory or 0))
        families["wall"].add_metric([tenant], float(wall or 0))
    yield from families.values()


def _vclusters(session: Session) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "virtuai_vclusters", "Virtual clusters by tenant and state", labels=["tenant", "state"]
    )
    query = (
        select(TenantRow.name, VirtualClusterRow.state, func.count())
        .select_from(VirtualClusterRow)
        .join(TenantRow, TenantRow.id == VirtualClusterRow.tenant_id)
        .group_by(TenantRow.name, VirtualClusterRow.state)
    )
    for tenant, state, count in session.execute(query):
        family.add_metric([tenant, state], count)
    yield family


def _gpus(stats: list[GpuStats]) -> Iterator[Metric]:
    if not stats:
        return
    labels = ["gpu", "uuid", "model"]
    utilization = GaugeMetricFamily(
        "virtuai_gpu_utilization_percent", "GPU busy time (NVML)", labels=labels
    )
    used = GaugeMetricFamily("virtuai_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
    total = GaugeMetricFamily("virtuai_gpu_memory_total_bytes", "GPU memory", labels=labels)
    for gpu in stats:
        values = [str(gpu.index), gpu.uuid, gpu.model]
        utilization.add_metric(values, gpu.utilization)
        used.add_metric(values, gpu.memory_used)
        total.add_metric(values, gpu.memory_total)
    yield from (utilization, used, total)


class Metrics:
    """This process's registry: the database collector plus what only this process sees."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        gpu_stats: Callable[[], list[GpuStats]] = nvml_gpu_stats,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DatabaseCollector(sessions, gpu_stats))
        self.api_latency = Histogram(
            "virtuai_api_request_seconds",
            "API request latency by route",
            ["method", "route"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self._latency_children: dict[tuple[str, str], Histogram] = {}
        self.api_errors = Counter(
            "virtuai_api_errors",
            "API answers with status >= 400, by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.scheduler_pass = Histogram(
            "virtuai_scheduler_pass_seconds",
            "Duration of one scheduling pass",
            buckets=SCHEDULER_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled child by (method, route), kept: ``labels()`` checks the labels and
        # takes a lock at every request.  Routes are templates: the map stays small.
        key = (method, route)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.api_latency.labels(method, route)
        child.observe(seconds)
        if status >= 400:
            self.api_errors.labels(method, route, str(status)).inc()

    def timed(self, step: Callable[[], Any]) -> Callable[[], None]:
        """``step`` (a scheduling pass), with its duration observed."""

        def run() -> None:
            started = time.perf_counter()
            try:
                step()
            finally:
                self.scheduler_pass.observe(time.perf_counter() - started)

        return run
