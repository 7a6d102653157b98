"""Weighted dominant-resource fair share over decayed usage, and the factor ``sshare`` prints.

Why decayed usage: a tenant that used a lot last month should not be
penalised forever, nor one that used a lot an hour ago be forgotten.  Past
usage counts with weight ``2 ** (-age / half_life)`` (Slurm's
PriorityDecayHalfLife, default 7 days).

Why dominant resource: a tenant's share of the cluster is its largest share of
any one resource (Ghodsi et al., DRF), so GPU-heavy and memory-heavy tenants
are compared fairly.  Per tenant ``t`` and resource ``r`` (``C_r`` the cluster's
capacity, ``tau = half_life / ln 2``):

- ``history_r = H_r / (C_r * tau)``: decayed resource-seconds as a fraction of
  what the whole cluster could have delivered (holding a fraction ``f`` forever
  gives ``f``);
- ``current_r = A_r / C_r``: what it holds now;
- ``usage = max_r ((1 - w) * history_r + w * current_r)``, ``w`` the policy's
  ``allocation_weight`` (counting current allocation makes the order react
  within a pass: a tenant that just got jobs admitted moves back);
- ``norm_shares = weight / sum of weights`` and, as in Slurm's classic formula,
  ``factor = 2 ** (-usage / norm_shares)``: 1 for no usage, 0.5 for a tenant
  using exactly its share, towards 0 beyond.

The queue orders jobs of equal priority by ``usage / norm_shares`` (lower
first), which is the same order as the factor but cannot underflow to a tie.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter, is_

from virtuai.domain.resources import RESOURCE_NAMES, Node, Resources
from virtuai.scheduler.feasibility import usable_gpus
from virtuai.scheduler.snapshot import HistoricalUsage, NodeState, TenantState

__all__ = [
    "FairShare",
    "ShareTracker",
    "accrue",
    "capacity_of",
    "cluster_capacity",
    "decay",
    "decayed",
    "fair_share",
    "node_of",
]

LN2 = math.log(2)


def decay(elapsed_s: float, half_life_s: float) -> float:
    """The weight left after ``elapsed_s`` seconds: ``2 ** (-elapsed / half_life)``."""
    if half_life_s <= 0:
        return 0.0 if elapsed_s > 0 else 1.0
    return float(2.0 ** (-max(0.0, elapsed_s) / half_life_s))


def decayed(history: HistoricalUsage, now: float, half_life_s: float) -> HistoricalUsage:
    """``history`` decayed from its ``as_of`` to ``now`` (never forwards in time)."""
    if now <= history.as_of:
        return history
    d = decay(now - history.as_of, half_life_s)
    return HistoricalUsage(history.cpu_milli_s * d, history.memory_s * d, history.gpu_s * d, now)


def accrue(
    history: HistoricalUsage, held: Resources, start: float, end: float, half_life_s: float
) -> HistoricalUsage:
    """``history`` plus holding ``held`` from ``start`` to ``end``, decayed exactly.

    Holding ``a`` on ``[s, e)`` is worth ``a * tau * (1 - 2 ** (-(e - s) / h))`` at
    ``e``.  The result is as of ``max(history.as_of, end)``; a record older than
    the history is decayed to it, so records may be added in any order.
    """
    as_of = max(history.as_of, end)
    base = decayed(history, as_of, half_life_s)
    span = max(0.0, end - start)
    tau = half_life_s / LN2 if half_life_s > 0 else 0.0
    gain = tau * (1.0 - decay(span, half_life_s)) * decay(as_of - end, half_life_s)
    return HistoricalUsage(
        base.cpu_milli_s + held.cpu_milli * gain,
        base.memory_s + held.memory * gain,
        base.gpu_s + held.gpu * gain,
        as_of,
    )


_last_capacity: list[tuple[list[Node], Resources]] = []
node_of = attrgetter("node")  # of a ``NodeState`` (C speed: passes map it over every node)


def cluster_capacity(nodes: Iterable[NodeState]) -> Resources:
    """Total capacity (GPUs that have devices only), the denominator of every share."""
    return capacity_of(list(map(node_of, nodes)))


def capacity_of(nodes: list[Node]) -> Resources:
    """``cluster_capacity`` of the nodes themselves.  The last answer is kept: a pass over
    the very same ``Node`` objects (the simulator's) gets it without the walk over them."""
    for last, capacity in _last_capacity:
        if last is nodes or (len(last) == len(nodes) and all(map(is_, last, nodes))):
            return capacity
    cpu = memory = gpu = 0
    for node in nodes:
        cpu += node.capacity.cpu_milli
        memory += node.capacity.memory
        gpu += usable_gpus(node)
    capacity = Resources(cpu, memory, gpu)
    _last_capacity[:] = [(nodes, capacity)]
    return capacity


@dataclass(frozen=True, slots=True)
class FairShare:
    """One tenant's line of ``virtuai fairshare`` (Slurm's ``sshare``)."""

    tenant: str
    weight: float
    norm_shares: float  # weight / sum of all weights
    history: HistoricalUsage  # decayed up to now
    allocation: Resources  # held now
    usage: float  # effective dominant share, a fraction of the cluster
    dominant: str  # the resource that gives ``usage`` ("" when it is 0)
    factor: float  # 2 ** (-usage / norm_shares), in [0, 1]; higher goes first


class ShareTracker:
    """Fair-share standing of every tenant during one pass; admissions move it."""

    def __init__(
        self,
        tenants: Iterable[TenantState],
        allocation: Mapping[str, Resources],
        capacity: Resources,
        *,
        now: float,
        half_life_s: float,
        allocation_weight: float,
    ) -> None:
        caps = (capacity.cpu_milli, capacity.memory, capacity.gpu)
        w = min(1.0, max(0.0, allocation_weight))
        tau = half_life_s / LN2 if half_life_s > 0 else 0.0
        self._scale = tuple(w / c if c > 0 else 0.0 for c in caps)
        self._hist_scale = tuple((1 - w) / (c * tau) if c > 0 and tau > 0 else 0.0 for c in caps)
        listed = list(tenants)
        self._tenants = {t.name: t for t in listed}
        self._total_weight = math.fsum(max(0.0, t.weight) for t in listed)
        self._allocation = allocation
        self._now, self._half_life_s = now, half_life_s
        # Each tenant's standing is worked out when first asked for: a pass asks about
        # the tenants with jobs waiting, which with many tenants are few of them.
        self._history: dict[str, HistoricalUsage] = {}
        self._base: dict[str, list[float]] = {}
        self._alloc: dict[str, list[int]] = {}
        # ``ratio`` is asked for every job the fair order yields; only ``add`` changes it.
        self._ratios: dict[str, float] = {}

    def _standing(self, tenant: str) -> tuple[list[float], list[int]] | None:
        """(decayed past usage, scaled; allocation) of ``tenant``; ``None``: unknown."""
        base = self._base.get(tenant)
        if base is not None:
            return base, self._alloc[tenant]
        t = self._tenants.get(tenant)
        if t is None:
            return None
        h = self._history[tenant] = decayed(t.history, self._now, self._half_life_s)
        scale = self._hist_scale
        base = self._base[tenant] = [
            h.cpu_milli_s * scale[0],
            h.memory_s * scale[1],
            h.gpu_s * scale[2],
        ]
        held = self._allocation.get(tenant, Resources())
        alloc = self._alloc[tenant] = [held.cpu_milli, held.memory, held.gpu]
        return base, alloc

    def _share(self, tenant: str) -> float:
        t = self._tenants.get(tenant)
        total = self._total_weight
        return max(0.0, t.weight) / total if t is not None and total > 0 else 0.0

    def usage(self, tenant: str) -> tuple[float, int]:
        """(effective dominant share, index of the dominant resource) of ``tenant``."""
        standing = self._standing(tenant)
        if standing is None:
            return 0.0, -1
        base, alloc = standing
        scale = self._scale
        best, which = 0.0, -1
        for r in range(3):
            value = base[r] + alloc[r] * scale[r]
            if value > best:
                best, which = value, r
        return best, which

    def ratio(self, tenant: str) -> float:
        """usage / norm_shares: the queue's sort key (lower goes first)."""
        known = self._ratios.get(tenant)
        if known is not None:
            return known
        used, _ = self.usage(tenant)
        share = self._share(tenant)
        ratio = self._ratios[tenant] = math.inf if share <= 0 else used / share
        return ratio

    def add(self, tenant: str, held: Resources) -> None:
        """Count ``held`` as allocated to ``tenant`` from now on (an admission)."""
        standing = self._standing(tenant)
        self._ratios.pop(tenant, None)
        if standing is not None:
            alloc = standing[1]
            alloc[0] += held.cpu_milli
            alloc[1] += held.memory
            alloc[2] += held.gpu

    def rows(self) -> tuple[FairShare, ...]:
        out = []
        for name in sorted(self._tenants):
            t = self._tenants[name]
            used, which = self.usage(name)
            share = self._share(name)
            factor = 0.0 if share <= 0 else 2.0 ** (-used / share)
            out.append(
                FairShare(
                    tenant=name,
                    weight=t.weight,
                    norm_shares=share,
                    history=self._history[name],
                    allocation=Resources(*self._alloc[name]),
                    usage=used,
                    dominant=RESOURCE_NAMES[which] if which >= 0 else "",
                    factor=factor,
                )
            )
        return tuple(out)


def fair_share(
    tenants: Iterable[TenantState],
    capacity: Resources,
    *,
    now: float,
    half_life_s: float = 7 * 86400.0,
    allocation_weight: float = 0.5,
) -> tuple[FairShare, ...]:
    """Every tenant's weight, decayed usage, share and factor, sorted by tenant name.

    ``TenantState.usage`` is the current allocation and ``TenantState.history``
    the decayed past usage; ``capacity`` is ``cluster_capacity(snapshot.nodes)``.
    """
    ordered = list(tenants)
    tracker = ShareTracker(
        ordered,
        {t.name: t.usage for t in ordered},
        capacity,
        now=now,
        half_life_s=half_life_s,
        allocation_weight=allocation_weight,
    )
    return tracker.rows()
