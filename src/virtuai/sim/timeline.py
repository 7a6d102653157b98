"""What a replay held over time, kept as changes: a row per event would not fit.

A replay samples, at every event time, each tenant's waiting jobs and the
(cpu, memory, gpu) it holds, and the (cpu, memory, gpu) allocated in each pool:
step functions, each value holding until the tenant's (or pool's) next change.
An event changes one or two tenants and pools, so only those are written.  Full
rows (a number per tenant at every event) made a trace like Alibaba's PAI
(about a million jobs of 1,300 users) need tens of GB, and cost the replay the
writing of every tenant's numbers at every event.

What the metrics need is read from the changes directly (``Steps``): sums over
tenants as one number per sample (the total of GPUs held, how many tenants wait),
and each tenant's integral over time against a measure of the samples (the time
each one lasts, or only its contended part).  Dense arrays are for small views:
the tests, and plots of a few tenants.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from virtuai.domain.resources import Resources

__all__ = ["Floats", "Ints", "Steps", "Timeline", "dominant_shares"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Reading = Floats | Ints | npt.NDArray[np.bool_]  # one number per change

TENANT_FIELDS = 4  # waiting jobs, then cpu (milli), memory, gpu held
POOL_FIELDS = 3  # cpu (milli), memory, gpu allocated


class Timeline:
    """Step functions sampled at every event time, stored as the changes at each sample.

    Every value is 0 before its first change.  Two records at the same time make one
    sample; the later one's values win.
    """

    def __init__(self, tenants: Sequence[str], pools: Sequence[str]) -> None:
        self.tenants = list(tenants)
        self.pools = list(pools)
        self.times = array("d")
        # Per change: the sample it happened at, whose it is, then its values.
        self._tenant_at, self._tenant_who, self._tenant_values = array("q"), array("q"), array("q")
        self._pool_at, self._pool_who, self._pool_values = array("q"), array("q"), array("q")
        self._steps: dict[str, Steps] = {}  # read back once, until the next record

    def record(
        self,
        t: float,
        tenants: Sequence[Sequence[int]],
        pools: Sequence[Sequence[int]],
    ) -> None:
        """A sample at ``t``: ``(tenant, waiting, cpu, memory, gpu)`` of the tenants that
        changed since the last one, ``(pool, cpu, memory, gpu)`` of the pools."""
        if self._steps:
            self._steps.clear()
        times = self.times
        if not times or times[-1] != t:
            times.append(t)
        k = len(times) - 1
        for who, *values in tenants:
            self._tenant_at.append(k)
            self._tenant_who.append(who)
            self._tenant_values.extend(values)
        for who, *values in pools:
            self._pool_at.append(k)
            self._pool_who.append(who)
            self._pool_values.extend(values)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def nbytes(self) -> int:
        """The memory the timeline's numbers take."""
        ints = [self._tenant_at, self._tenant_who, self._tenant_values]
        ints += [self._pool_at, self._pool_who, self._pool_values]
        return len(self.times) * self.times.itemsize + sum(len(a) * a.itemsize for a in ints)

    def tenant_steps(self) -> Steps:
        """The tenants' changes; values: waiting, cpu, memory, gpu."""
        steps = self._steps.get("tenants")
        if steps is None:
            steps = self._steps["tenants"] = Steps.of(
                len(self.times), len(self.tenants), self._tenant_at, self._tenant_who,
                self._tenant_values, TENANT_FIELDS,
            )  # fmt: skip
        return steps

    def pool_steps(self) -> Steps:
        """The pools' changes; values: cpu, memory, gpu allocated."""
        steps = self._steps.get("pools")
        if steps is None:
            steps = self._steps["pools"] = Steps.of(
                len(self.times), len(self.pools), self._pool_at, self._pool_who,
                self._pool_values, POOL_FIELDS,
            )  # fmt: skip
        return steps

    def arrays(self) -> tuple[Floats, Ints, Ints, Ints]:
        """``(times, waiting[k, tenant], held[k, tenant, 3], allocated[k, pool, 3])``, dense:
        a number per tenant at every sample, so for small timelines only."""
        times = np.frombuffer(self.times, dtype=np.float64).copy()
        tenants = self.tenant_steps().dense()
        return times, tenants[:, :, 0].copy(), tenants[:, :, 1:].copy(), self.pool_steps().dense()


@dataclass(frozen=True)
class Steps:
    """The changes of one kind of owner (tenants or pools), ordered by owner then sample.

    ``values[c]`` holds from sample ``at[c]`` until sample ``until[c]`` (the owner's
    next change, or ``samples``: to the end); ``before[c]`` is what it replaced.
    """

    samples: int
    owners: int
    at: Ints
    who: Ints
    values: Ints  # changes x fields
    before: Ints  # changes x fields
    until: Ints

    @classmethod
    def of(
        cls, samples: int, owners: int, at: array[int], who: array[int], values: array[int],
        fields: int,
    ) -> Steps:  # fmt: skip
        at_ = np.frombuffer(at, dtype=np.int64)
        who_ = np.frombuffer(who, dtype=np.int64)
        values_ = np.frombuffer(values, dtype=np.int64).reshape(len(at_), fields)
        order = np.lexsort((np.arange(len(at_)), at_, who_))  # stable: the later change wins
        at_, who_, values_ = at_[order], who_[order], values_[order]
        first = np.ones(len(at_), dtype=bool)
        first[1:] = who_[1:] != who_[:-1]
        last = np.ones(len(at_), dtype=bool)
        last[:-1] = first[1:]
        before = np.zeros_like(values_)
        before[1:] = values_[:-1]
        before[first] = 0
        until = np.full(len(at_), samples, dtype=np.int64)
        until[:-1] = at_[1:]
        until[last] = samples
        return cls(samples, owners, at_, who_, values_, before, until)

    def per_sample(
        self, value: Callable[[Ints], Reading], among: npt.NDArray[np.bool_] | None = None
    ) -> Floats:
        """The sum over owners (those of ``among``, by owner, if given) of ``value`` (of
        the ``[change, field]`` values, one number per change), at every sample."""
        after = np.asarray(value(self.values), dtype=np.float64)
        weights = after - np.asarray(value(self.before), dtype=np.float64)
        if among is not None:
            weights = weights * among[self.who]
        sums = np.bincount(self.at, weights=weights, minlength=self.samples)
        return np.cumsum(sums).astype(np.float64, copy=False)

    def integral(self, value: Floats | Ints, measure: Floats) -> Floats:
        """Per owner, the integral of a value (one per change) against ``measure``, the
        cumulative measure at each sample boundary (``samples + 1`` numbers)."""
        span = measure[self.until] - measure[self.at]
        weights = np.asarray(value, dtype=np.float64) * span
        return np.bincount(self.who, weights=weights, minlength=self.owners).astype(
            np.float64, copy=False
        )

    def dense(self) -> Ints:
        """``[sample, owner, field]``, every value at every sample."""
        out = np.zeros((self.samples, self.owners, self.values.shape[1]), dtype=np.int64)
        for c in range(len(self.at)):
            out[self.at[c] : self.until[c], self.who[c]] = self.values[c]
        return out


def dominant_shares(held: Ints, capacity: Resources) -> Floats:
    """Per row of (cpu, memory, gpu) held, the largest share of ``capacity`` it is (DRF's
    dominant share; a resource the cluster lacks counts for nothing)."""
    total = np.array([capacity.cpu_milli, capacity.memory, capacity.gpu], dtype=np.float64)
    shares: Floats = (held / np.where(total > 0, total, np.inf)).max(axis=1, initial=0.0)
    return shares
