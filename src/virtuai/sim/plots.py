"""PNG plots of one replay: queue length, utilization per pool, each tenant's share.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
state, no display needed).  The timeline is a step function with one sample per
event, up to hundreds of thousands of them; it is averaged over ``BINS`` equal
time bins (time-weighted, so nothing is lost to sampling) before drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from virtuai.sim.engine import SimRun
from virtuai.sim.timeline import Ints, Reading, Steps, dominant_shares

__all__ = ["BINS", "TENANTS_DRAWN", "binned", "plot_run", "tenant_bands"]

Floats = npt.NDArray[np.float64]
BINS = 600
TENANTS_DRAWN = 11  # bands of a stacked plot: ten tenants in the ten colours, the rest grey
HOUR = 3600.0


def binned(
    times: Floats, values: Floats, start: float, end: float, bins: int = BINS
) -> tuple[Floats, Floats]:
    """Time-weighted means of the step function ``values`` (k x ...) over ``bins`` equal bins.

    Returns ``(bin centres, means)``.  Sample ``i`` holds on ``[times[i], times[i+1])``,
    the last one until ``end``.
    """
    if end <= start or len(times) == 0:
        return np.array([start]), np.zeros((1, *values.shape[1:]))
    edges = np.linspace(start, end, bins + 1)
    # Integral of the step function from ``start`` up to each sample time ...
    clipped = np.clip(times, start, end)
    steps = np.diff(np.append(clipped, end))
    area = np.concatenate(
        [np.zeros((1, *values.shape[1:])), np.cumsum(values * _col(steps, values), axis=0)]
    )
    knots = np.append(clipped, end)
    # ... then at each bin edge: the area at the sample before it plus the partial step.
    k = np.clip(np.searchsorted(knots, edges, side="right") - 1, 0, len(times) - 1)
    at_edges = area[k] + values[k] * _col(edges - knots[k], values)
    means = np.diff(at_edges, axis=0) / _col(np.diff(edges), values)
    return (edges[:-1] + edges[1:]) / 2, means


def _col(x: Floats, like: npt.NDArray[np.generic]) -> Floats:
    return x.reshape((-1,) + (1,) * (like.ndim - 1))


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, format="png", metadata={"Software": None})
    return path


def plot_run(run: SimRun, out: Path, stem: str) -> list[Path]:
    """Write ``<stem>-queue.png``, ``<stem>-utilization.png`` and ``<stem>-share.png``."""
    timeline = run.timeline
    times = np.array(timeline.times, dtype=np.float64)
    steps, pool_steps = timeline.tenant_steps(), timeline.pool_steps()
    finished = [f for f in run.finish if not math.isnan(f)]
    start = min((j.submit for j in run.jobs), default=0.0)
    end = max(finished, default=start + 1.0)
    if end <= start:
        end = start + 1.0
    title = f"{run.policy.name} on {run.cluster.name}"
    pools = run.cluster.pools
    tenants, groups = tenant_bands(run)
    k = len(times)
    waiting = _series(steps, lambda v: v[:, 0], groups, k)
    dominant = _series(steps, lambda v: dominant_shares(v[:, 1:], run.cluster.capacity), groups, k)
    each_pool = [np.arange(len(pools)) == p for p in range(len(pools))]
    allocated = np.stack(
        [_series(pool_steps, _column(r), each_pool, k) for r in range(3)], axis=2
    )  # sample x pool x 3
    paths = []

    centres, queue = binned(times, waiting, start, end)
    hours = (centres - start) / HOUR
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.stackplot(hours, queue.T, labels=_labels(tenants), colors=_colors(tenants))
    ax.set(title=f"Waiting jobs: {title}", xlabel="hours", ylabel="jobs waiting (mean per bin)")
    ax.legend(loc="upper left", fontsize="small")
    paths.append(_save(fig, out / f"{stem}-queue.png"))

    _, alloc = binned(times, allocated, start, end)
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for p, pool in enumerate(pools):
        cap = pool.capacity
        if cap.gpu:
            ax.plot(hours, alloc[:, p, 2] / cap.gpu, label=f"{pool.name} GPU")
        if cap.cpu_milli:
            ax.plot(hours, alloc[:, p, 0] / cap.cpu_milli, label=f"{pool.name} CPU", linestyle="--")
    ax.set(title=f"Utilization per pool: {title}", xlabel="hours", ylabel="allocated / capacity")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize="small")
    paths.append(_save(fig, out / f"{stem}-utilization.png"))

    _, share = binned(times, dominant, start, end)
    weights = np.array([sum(run.cluster.tenant(t).weight for t in group) for group in tenants])
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.stackplot(hours, share.T, labels=_labels(tenants), colors=_colors(tenants))
    for level in np.cumsum(weights / weights.sum())[:-1]:
        ax.axhline(float(level), color="grey", linewidth=0.5, linestyle=":")
    ax.set(
        title=f"Dominant share per tenant (stacked; dotted: weighted fair shares): {title}",
        xlabel="hours",
        ylabel="share of the cluster",
    )
    ax.title.set_fontsize("medium")
    ax.set_ylim(0, max(1.0, float(share.sum(axis=1).max()) * 1.05))
    ax.legend(loc="upper left", fontsize="small")
    paths.append(_save(fig, out / f"{stem}-share.png"))
    return paths


def tenant_bands(run: SimRun) -> tuple[list[list[str]], list[npt.NDArray[np.bool_]]]:
    """The tenants of the stacked plots, each alone; or, with more than ``TENANTS_DRAWN``
    (a trace of a thousand users), the ones that held the largest share of the cluster
    over time (dominant share: GPUs, or CPUs on a cluster without) and the rest as one
    band.  With each band, which tenants (by number) it holds."""
    names = run.timeline.tenants
    if len(names) <= TENANTS_DRAWN:
        alone = [[name] for name in names]
        return alone, [np.arange(len(names)) == i for i in range(len(names))]
    times = np.array(run.timeline.times, dtype=np.float64)
    steps = run.timeline.tenant_steps()
    measure = np.concatenate([[0.0], np.cumsum(np.diff(times, append=times[-1:]))])
    held = steps.integral(dominant_shares(steps.values[:, 1:], run.cluster.capacity), measure)
    top = sorted(np.argsort(-held, kind="stable")[: TENANTS_DRAWN - 1])
    rest = np.ones(len(names), dtype=bool)
    rest[top] = False
    groups = [[names[i]] for i in top] + [[n for i, n in enumerate(names) if rest[i]]]
    return groups, [np.arange(len(names)) == i for i in top] + [rest]


def _series(
    steps: Steps,
    value: Callable[[Ints], Reading],
    groups: list[npt.NDArray[np.bool_]],
    samples: int,
) -> Floats:
    """``[sample, group]``: the sum over each group's owners of a value (``Steps.per_sample``)."""
    if not groups:
        return np.zeros((samples, 0))
    return np.stack([steps.per_sample(value, g) for g in groups], axis=1)


def _column(field: int) -> Callable[[Ints], Ints]:
    return lambda values: values[:, field]


def _colors(groups: list[list[str]]) -> list[str]:
    """Matplotlib's cycle for the tenants drawn alone; grey for the band of the rest."""
    return [f"C{i % 10}" if len(g) == 1 else "0.75" for i, g in enumerate(groups)]


def _labels(groups: list[list[str]]) -> list[str]:
    return [g[0] if len(g) == 1 else f"{len(g)} other tenants" for g in groups]
