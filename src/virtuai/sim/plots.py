"""PNG plots of one replay: queue length, utilization per pool, each tenant's share.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
state, no display needed).  The timeline is a step function with one sample per
event, up to hundreds of thousands of them; it is averaged over ``BINS`` equal
time bins (time-weighted, so nothing is lost to sampling) before drawing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from virtuai.sim.engine import SimRun

__all__ = ["BINS", "binned", "plot_run"]

Floats = npt.NDArray[np.float64]
BINS = 600
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
    times, waiting, held, allocated = run.timeline.arrays()
    finished = [f for f in run.finish if not math.isnan(f)]
    start = min((j.submit for j in run.jobs), default=0.0)
    end = max(finished, default=start + 1.0)
    if end <= start:
        end = start + 1.0
    title = f"{run.policy.name} on {run.cluster.name}"
    tenants, pools = run.timeline.tenants, run.cluster.pools
    paths = []

    centres, queue = binned(times, waiting.astype(np.float64), start, end)
    hours = (centres - start) / HOUR
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.stackplot(hours, queue.T, labels=tenants)
    ax.set(title=f"Waiting jobs: {title}", xlabel="hours", ylabel="jobs waiting (mean per bin)")
    ax.legend(loc="upper left", fontsize="small")
    paths.append(_save(fig, out / f"{stem}-queue.png"))

    _, alloc = binned(times, allocated.astype(np.float64), start, end)
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

    cap = run.cluster.capacity
    capacity = np.array([cap.cpu_milli, cap.memory, cap.gpu], dtype=np.float64)
    dominant = (held.astype(np.float64) / np.where(capacity > 0, capacity, np.inf)).max(axis=2)
    _, share = binned(times, dominant, start, end)
    weights = np.array([run.cluster.tenant(t).weight for t in tenants])
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.stackplot(hours, share.T, labels=tenants)
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
