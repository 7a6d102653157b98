"""The simulated cluster: pools of identical nodes, tenants with quotas, priority classes.

Cluster YAML (every key but ``pools`` is optional)::

    name: synthetic-20            # shown in reports
    pools:                        # pool name -> its nodes, all alike
      gpu:
        count: 4                  # how many nodes (1 to 100,000 in all)
        cpu: 64                   # per node: CPUs (64, 0.5, 500m)
        memory: 512Gi             # per node: bytes or 512Gi / 4G ...
        gpus: 8                   # per node (default 0)
        gpu_model: A100           # (default "gpu")
        gpu_memory: 80Gi          # per GPU (default 0)
      cpu: {count: 16, cpu: 64, memory: 256Gi}
    tenants:                      # tenants not listed: no quota, weight 1
      physics:
        weight: 1                 # fair-share weight (default 1)
        cohort: research          # borrows unused quota of the cohort's other members
        quota: {cpu: 256, memory: 2Ti, gpu: 16}   # nominal, over all pools; omit = unlimited
        borrowing_limit: {gpu: 8} # at most this much more than nominal (omit: no limit)
        lending_limit: {gpu: 8}   # at most this much of its unused quota lent (omit: all)
        pools:                    # quota entries for single pools, same three keys
          gpu: {quota: {gpu: 16}}
    priority_classes:             # what the trace's priority column may name
      low: 100                    # (default: low 100, normal 500, high 1000 not preemptible)
      normal: 500
      high: {value: 1000, preemptible: false}

Quota semantics are the scheduler's (Kueue's ClusterQueue: nominal, borrowing
and lending limits; see ``virtuai.scheduler.quota``).

Nodes are named ``<pool>-<n>`` (``gpu-0000``) and all belong to site ``sim``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota, validate_name
from virtuai.domain.units import format_cpu, format_memory
from virtuai.domain.workload import DEFAULT_PRIORITY_CLASSES, PriorityClass
from virtuai.errors import InvalidRequest
from virtuai.scheduler.snapshot import TenantState
from virtuai.sim.yamlfile import (
    Section,
    YamlMap,
    as_bool,
    as_count,
    as_cpu,
    as_memory,
    as_positive,
    as_str,
    load_yaml,
    parse_yaml,
)

__all__ = [
    "DEFAULT_PRIORITIES",
    "ClusterSpec",
    "PoolSpec",
    "TenantSpec",
    "load_cluster",
    "parse_cluster",
]

SITE = "sim"
DEFAULT_PRIORITIES: Mapping[str, PriorityClass] = {c.name: c for c in DEFAULT_PRIORITY_CLASSES}

_TOP_KEYS = frozenset({"name", "pools", "tenants", "priority_classes"})
# Bounds that keep a typo from filling the memory (a node object per node): ten times
# the largest GPU clusters of today, and more GPUs a node than any machine has.
MAX_NODES = 100_000
MAX_NODE_GPUS = 1024
_POOL_KEYS = frozenset({"count", "cpu", "memory", "gpus", "gpu_model", "gpu_memory"})
_LIMIT_KEYS = frozenset({"quota", "borrowing_limit", "lending_limit"})
_TENANT_KEYS = frozenset({"weight", "cohort", "pools"}) | _LIMIT_KEYS
_CLASS_KEYS = frozenset({"value", "preemptible"})
_QUOTA_KEYS = frozenset({"cpu", "memory", "gpu"})
_UNLIMITED = frozenset({"unlimited", "none"})


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """``count`` identical nodes."""

    name: str
    count: int
    cpu_milli: int
    memory: int
    gpus: int = 0
    gpu_model: str = "gpu"
    gpu_memory: int = 0

    @property
    def node_capacity(self) -> Resources:
        return Resources(self.cpu_milli, self.memory, self.gpus)

    @property
    def capacity(self) -> Resources:
        return self.node_capacity.times(self.count)

    def nodes(self) -> list[Node]:
        out = []
        for n in range(self.count):
            name = f"{self.name}-{n:04d}"
            devices = tuple(
                GpuDevice(i, self.gpu_model, self.gpu_memory, f"{name}-gpu{i}")
                for i in range(self.gpus)
            )
            out.append(Node(name, self.name, SITE, self.node_capacity, devices))
        return out


@dataclass(frozen=True, slots=True)
class TenantSpec:
    name: str
    quota: Quota = field(default_factory=Quota)  # nominal, over all pools
    weight: float = 1.0
    cohort: str | None = None
    borrowing_limit: Quota = field(default_factory=Quota)
    lending_limit: Quota = field(default_factory=Quota)
    pool_quotas: tuple[PoolQuota, ...] = ()  # entries for single pools

    def state(self, usage: Resources = Resources(), **extra: Any) -> TenantState:  # noqa: B008
        """The scheduler's view of this tenant, holding ``usage``."""
        limits = self.borrowing_limit != Quota() or self.lending_limit != Quota()
        quotas = self.pool_quotas
        if limits or quotas:
            whole = PoolQuota(ANY_POOL, self.quota, self.borrowing_limit, self.lending_limit)
            quotas = (whole, *quotas)
        return TenantState(
            self.name,
            self.quota,
            usage,
            quotas=quotas,
            cohort=self.cohort,
            weight=self.weight,
            **extra,
        )


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    pools: tuple[PoolSpec, ...]
    tenants: tuple[TenantSpec, ...] = ()
    priority_classes: Mapping[str, PriorityClass] = field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES)
    )

    def nodes(self) -> list[Node]:
        """Every node, pool by pool, in name order."""
        return [node for pool in self.pools for node in pool.nodes()]

    @property
    def capacity(self) -> Resources:
        total = Resources()
        for pool in self.pools:
            total = total + pool.capacity
        return total

    @property
    def node_count(self) -> int:
        return sum(pool.count for pool in self.pools)

    def tenant(self, name: str) -> TenantSpec:
        """The tenant's spec; a tenant the file does not list has no quota and weight 1."""
        for tenant in self.tenants:
            if tenant.name == name:
                return tenant
        return TenantSpec(name)

    def with_tenants(self, names: Iterable[str]) -> ClusterSpec:
        """This cluster with a spec for each of ``names`` (listed ones first, then defaults)."""
        listed = {t.name for t in self.tenants}
        extra = tuple(TenantSpec(n) for n in sorted(set(names) - listed))
        return replace(self, tenants=self.tenants + extra)

    def sliced(self, share: float, tenant: str) -> ClusterSpec:
        """A ``share`` of this cluster for ``tenant`` alone, with no quota (Themis's T_id).

        Each pool keeps ``round(count * share)`` nodes, at least one, so every
        kind of node is still there.  The tenant's quota is dropped: the slice
        itself is its limit.
        """
        pools = tuple(replace(p, count=max(1, round(p.count * share))) for p in self.pools)
        spec = self.tenant(tenant)
        return replace(
            self,
            name=f"{self.name}/{tenant}",
            pools=pools,
            tenants=(TenantSpec(tenant, weight=spec.weight),),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description."""
        cap = self.capacity
        return {
            "name": self.name,
            "nodes": self.node_count,
            "cpu": format_cpu(cap.cpu_milli),
            "memory": format_memory(cap.memory),
            "gpus": cap.gpu,
            "pools": {
                p.name: {
                    "count": p.count,
                    "cpu": format_cpu(p.cpu_milli),
                    "memory": format_memory(p.memory),
                    "gpus": p.gpus,
                    "gpu_model": p.gpu_model if p.gpus else None,
                }
                for p in self.pools
            },
            "tenants": {t.name: _tenant_json(t) for t in self.tenants},
        }

    def to_yaml(self) -> str:
        """The YAML that ``parse_cluster`` reads back into an equal spec."""
        data: dict[str, Any] = {"name": self.name, "pools": {}}
        for p in self.pools:
            pool: dict[str, Any] = {
                "count": p.count,
                "cpu": _yaml_cpu(p.cpu_milli),
                "memory": format_memory(p.memory),
            }
            if p.gpus:
                pool.update(
                    gpus=p.gpus, gpu_model=p.gpu_model, gpu_memory=format_memory(p.gpu_memory)
                )
            data["pools"][p.name] = pool
        if self.tenants:
            data["tenants"] = {}
            for t in self.tenants:
                data["tenants"][t.name] = {
                    k: v for k, v in _tenant_json(t).items() if v or k == "weight"
                }
        if dict(self.priority_classes) != dict(DEFAULT_PRIORITIES):
            data["priority_classes"] = {
                c.name: c.value if c.preemptible else {"value": c.value, "preemptible": False}
                for c in self.priority_classes.values()
            }
        return yaml.safe_dump(data, sort_keys=False)


def _tenant_json(t: TenantSpec) -> dict[str, Any]:
    return {
        "weight": t.weight,
        "cohort": t.cohort,
        "quota": _quota_json(t.quota),
        "borrowing_limit": _quota_json(t.borrowing_limit),
        "lending_limit": _quota_json(t.lending_limit),
        "pools": {
            q.pool: {
                k: v
                for k, v in (
                    ("quota", _quota_json(q.nominal)),
                    ("borrowing_limit", _quota_json(q.borrowing_limit)),
                    ("lending_limit", _quota_json(q.lending_limit)),
                )
                if v
            }
            for q in t.pool_quotas
        },
    }


def _yaml_cpu(milli: int) -> int | str:
    return milli // 1000 if milli % 1000 == 0 else format_cpu(milli)


def _quota_json(quota: Quota) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if quota.cpu_milli is not None:
        out["cpu"] = _yaml_cpu(quota.cpu_milli)
    if quota.memory is not None:
        out["memory"] = format_memory(quota.memory)
    if quota.gpu is not None:
        out["gpu"] = quota.gpu
    return out


def load_cluster(path: Path) -> ClusterSpec:
    """Read a cluster YAML file; errors name the file, line and field."""
    return _cluster(load_yaml(path), default_name=path.stem)


def parse_cluster(text: str, source: str = "cluster.yaml") -> ClusterSpec:
    return _cluster(parse_yaml(text, source), default_name=Path(source).stem)


def _cluster(root: Section, default_name: str) -> ClusterSpec:
    root.check_known(_TOP_KEYS)
    name = root.get("name", as_str, default_name)
    pools_section = root.section("pools", required=True)
    assert pools_section is not None
    pools = tuple(_pool(key, section) for key, section in pools_section.sections())
    if not pools:
        raise root.error("pools", "needs at least one pool")
    nodes = sum(pool.count for pool in pools)
    if not 1 <= nodes <= MAX_NODES:
        raise root.error("pools", f"needs 1 to {MAX_NODES:,} nodes in all, not {nodes:,}")
    tenants_section = root.section("tenants")
    pool_names = frozenset(p.name for p in pools)
    tenants = (
        tuple(_tenant(key, section, pool_names) for key, section in tenants_section.sections())
        if tenants_section is not None
        else ()
    )
    classes_section = root.section("priority_classes")
    classes = dict(DEFAULT_PRIORITIES)
    if classes_section is not None:
        classes = {key: _priority_class(classes_section, key) for key in classes_section.data}
    return ClusterSpec(name, pools, tenants, classes)


def _priority_class(section: Section, key: str) -> PriorityClass:
    value = section.data[key]
    if isinstance(value, YamlMap):
        inner = Section(section.source, section.field(key), value)
        inner.check_known(_CLASS_KEYS)
        return PriorityClass(
            key, inner.require("value", _as_int), inner.get("preemptible", as_bool, True)
        )
    return PriorityClass(key, section.get(key, _as_int, 0))


def _as_node_gpus(value: Any, field: str) -> int:
    gpus = as_count(value, field)
    if gpus > MAX_NODE_GPUS:
        raise InvalidRequest(
            f"{field}: at most {MAX_NODE_GPUS} GPUs a node, not {gpus}", field=field
        )
    return gpus


def _name(section: Section, key: str) -> str:
    try:
        return validate_name(key, field=section.path)
    except InvalidRequest as exc:
        raise section.error(None, exc.message.split(" ", 1)[1]) from None


def _pool(key: str, section: Section) -> PoolSpec:
    section.check_known(_POOL_KEYS)
    name = _name(section, key)
    pool = PoolSpec(
        name=name,
        count=section.require("count", as_count),
        cpu_milli=section.require("cpu", as_cpu),
        memory=section.require("memory", as_memory),
        gpus=section.get("gpus", _as_node_gpus, 0),
        gpu_model=section.get("gpu_model", as_str, "gpu"),
        gpu_memory=section.get("gpu_memory", as_memory, 0),
    )
    if pool.cpu_milli <= 0:
        raise section.error("cpu", "a node needs more than 0 CPUs")
    return pool


def _tenant(key: str, section: Section, pool_names: frozenset[str]) -> TenantSpec:
    section.check_known(_TENANT_KEYS)
    name = _name(section, key)
    weight = section.get("weight", as_positive, 1.0)
    cohort = section.get("cohort", as_str, None)
    nominal, borrow, lend = _limits(section)
    pool_quotas = []
    pools = section.section("pools")
    if pools is not None:
        for pool, entry in pools.sections():
            if pool not in pool_names:
                raise pools.error(pool, "no such pool in this cluster")
            entry.check_known(_LIMIT_KEYS)
            pool_quotas.append(PoolQuota(pool, *_limits(entry)))
    return TenantSpec(name, nominal, weight, cohort, borrow, lend, tuple(pool_quotas))


def _limits(section: Section) -> tuple[Quota, Quota, Quota]:
    """The ``quota``, ``borrowing_limit`` and ``lending_limit`` of ``section``."""
    out = []
    for key in ("quota", "borrowing_limit", "lending_limit"):
        quota = Quota()
        inner = section.section(key)
        if inner is not None:
            inner.check_known(_QUOTA_KEYS)
            quota = Quota(
                cpu_milli=inner.get("cpu", _unlimited_or(as_cpu), None),
                memory=inner.get("memory", _unlimited_or(as_memory), None),
                gpu=inner.get("gpu", _unlimited_or(as_count), None),
            )
        out.append(quota)
    return out[0], out[1], out[2]


def _unlimited_or(parse: Any) -> Any:
    def parse_limit(value: Any, field: str) -> int | None:
        if isinstance(value, str) and value.strip().lower() in _UNLIMITED:
            return None
        result: int = parse(value, field)
        return result

    return parse_limit


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{field}: expected a whole number, not {value!r}", field=field)
    return value
