"""What a replay measured: completion times, waits, utilization and fairness.

Definitions (times in seconds; "finished" = ended ``succeeded`` or ``timed_out``;
``rejected`` jobs, refused at submit as never runnable, are left out of every
figure except their count):

- **JCT** (job completion time) = finish - submit.  **wait** = JCT minus the
  time the job held resources (over all its attempts): the time it spent queued.
  Reported as mean, p50 and p99 (numpy's linear interpolation).
- **bounded slowdown** = max(1, JCT / max(run, 10 s)), run = min(duration, walltime).
- **makespan** = last finish - first submission.
- **utilization** of a resource = allocated resource-time / (capacity x makespan),
  integrated over [first submission, last finish]; for the whole cluster and per pool.
  Over a whole run that is mostly a property of the trace (every policy does the
  same work), so ``gpu_utilization_submit`` integrates over the *submission
  window* [first, last submission] only, where a policy that leaves GPUs idle
  while jobs wait shows it, and ``idle_gpus_waiting_mean`` is the mean number of
  free GPUs over the time when some job waits (0 is best).
- JCT and wait are also reported at p95.
- A tenant's **dominant share** at time t is max over cpu, memory, gpu of
  (what it holds / the cluster's capacity) (DRF).  Its **dominant-resource time**
  is the integral of that over the run.
- **Jain's index** J = (sum x)^2 / (n sum x^2) over the n tenants of the trace,
  x_i = tenant i's dominant-resource time / its fair-share weight.  J = 1 when
  every tenant got the same weighted share, 1/n when one got everything.
  ``jain_gpu`` does the same over GPU-time.  Over a whole run these also reflect
  how much each tenant asked for, so ``jain_contended`` integrates only over the
  *contended* time, when every tenant of the trace had work waiting: there a fair
  scheduler must split the cluster by weight, and J measures whether it did.
  ``contended_s`` is that window's length: always read them together (a J over a
  few minutes says little).
- ``gpu_share`` / ``gpu_share_contended``: each tenant's fraction of the GPU-time
  used (over the run / over the contended time).
- **finish-time fairness** (Themis): rho = JCT in the shared cluster / JCT in an
  isolated cluster of the tenant's share (weight / sum of weights; 1/N for equal
  weights), both floored at 1 s; see ``virtuai.sim.isolated`` for the estimate.
  rho <= 1 means sharing did not hurt the job.  Reported: mean, p99 and max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from virtuai.sim.engine import Outcome, SimRun
from virtuai.sim.timeline import dominant_shares

__all__ = ["RHO_FLOOR_S", "jain", "summarize"]

Floats = npt.NDArray[np.float64]
RHO_FLOOR_S = 1.0
SLOWDOWN_FLOOR_S = 10.0
HOUR = 3600.0


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index of ``values`` (None when there are none or all are 0)."""
    x = np.asarray(values, dtype=np.float64)
    square_sum = float((x * x).sum())
    if len(x) == 0 or square_sum == 0:
        return None
    return float(x.sum() ** 2 / (len(x) * square_sum))


def _stats(values: Floats) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def summarize(run: SimRun, isolated_jct: Sequence[float] | None = None) -> dict[str, Any]:
    """The metrics of ``run`` (see the module's docstring) as a JSON-ready mapping.

    ``isolated_jct[j]`` is job ``j``'s JCT alone on its tenant's share of the
    cluster (NaN when unknown); without it the rho figures are None.
    """
    jobs = run.jobs
    n = len(jobs)
    submit = np.array([j.submit for j in jobs], dtype=np.float64)
    run_s = np.array([j.run_s for j in jobs], dtype=np.float64)
    finish = np.array(run.finish, dtype=np.float64)
    ran = np.array(run.ran, dtype=np.float64)
    done = np.array([o in (Outcome.SUCCEEDED, Outcome.TIMED_OUT) for o in run.outcome], dtype=bool)
    jct = (finish - submit)[done]
    wait = (finish - submit - ran)[done]
    slowdown = np.maximum(1.0, jct / np.maximum(run_s[done], SLOWDOWN_FLOOR_S))
    counts = {
        "jobs": n,
        "finished": int(done.sum()),
        "succeeded": run.outcome.count(Outcome.SUCCEEDED),
        "timed_out": run.outcome.count(Outcome.TIMED_OUT),
        "rejected": run.outcome.count(Outcome.REJECTED),
        "unfinished": run.outcome.count(Outcome.UNFINISHED),
        "preemptions": int(sum(run.preemptions)),
    }
    gpus = np.array([j.total.gpu for j in jobs], dtype=np.float64)
    lost_gpu_h = float(((ran - run_s) * gpus)[done].sum()) / HOUR

    start = float(submit[done].min()) if done.any() else 0.0
    end = float(finish[done].max()) if done.any() else start
    makespan = end - start
    usage = _usage(run, start, end)
    window = _window(run, float(submit.min()) if n else 0.0, float(submit.max()) if n else 0.0)

    rho_part: dict[str, Any] = {"rho_mean": None, "rho_p99": None, "rho_max": None}
    rho_by_tenant: dict[str, dict[str, float | None]] = {}
    rho_all = np.full(n, math.nan)
    if isolated_jct is not None:
        iso = np.asarray(isolated_jct, dtype=np.float64)
        rho_all = np.maximum(finish - submit, RHO_FLOOR_S) / np.maximum(iso, RHO_FLOOR_S)
        rho_all[~done] = math.nan
        known = rho_all[~np.isnan(rho_all)]
        s = _stats(known)
        rho_part = {"rho_mean": s["mean"], "rho_p99": s["p99"], "rho_max": s["max"]}

    tenants: dict[str, Any] = {}
    # Each tenant's jobs in trace order, from one sort: a scan of every job per tenant cost
    # a thousand scans of a million jobs on PAI's trace.
    number = {name: i for i, name in enumerate(run.timeline.tenants)}
    owner = np.array([number.get(j.tenant, -1) for j in jobs], dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(number) + 1))
    jct_all, wait_all = finish - submit, finish - submit - ran
    for i, name in enumerate(run.timeline.tenants):
        theirs = order[bounds[i] : bounds[i + 1]]
        if not len(theirs):
            continue
        mine = theirs[done[theirs]]
        entry = dict(usage["tenants"][i])
        entry["jobs"] = len(theirs)
        entry["finished"] = len(mine)
        entry["jct_mean_s"] = float(jct_all[mine].mean()) if len(mine) else None
        entry["wait_mean_s"] = float(wait_all[mine].mean()) if len(mine) else None
        r = rho_all[mine]
        r = r[~np.isnan(r)]
        entry["rho_mean"] = float(r.mean()) if len(r) else None
        entry["rho_max"] = float(r.max()) if len(r) else None
        rho_by_tenant[name] = {"mean": entry["rho_mean"], "max": entry["rho_max"]}
        tenants[name] = entry

    jct_s, wait_s, slow_s = _stats(jct), _stats(wait), _stats(slowdown)
    metrics: dict[str, Any] = {
        **counts,
        "jct_mean_s": jct_s["mean"],
        "jct_p50_s": jct_s["p50"],
        "jct_p95_s": jct_s["p95"],
        "jct_p99_s": jct_s["p99"],
        "wait_mean_s": wait_s["mean"],
        "wait_p50_s": wait_s["p50"],
        "wait_p95_s": wait_s["p95"],
        "wait_p99_s": wait_s["p99"],
        "bounded_slowdown_mean": slow_s["mean"],
        "bounded_slowdown_p99": slow_s["p99"],
        "makespan_s": makespan,
        "gpu_utilization": usage["utilization"]["gpu"],
        "cpu_utilization": usage["utilization"]["cpu"],
        "memory_utilization": usage["utilization"]["memory"],
        "gpu_utilization_submit": window["gpu_utilization"],
        "idle_gpus_waiting_mean": window["idle_gpus_waiting"],
        "jain": usage["jain"],
        "jain_gpu": usage["jain_gpu"],
        "jain_contended": usage["jain_contended"],
        "contended_s": usage["contended_s"],
        **rho_part,
        "lost_gpu_hours": lost_gpu_h,
    }
    return {
        "metrics": metrics,
        "pools": usage["pools"],
        "tenants": tenants,
        "simulation": {
            "events": run.events,
            "passes": run.passes,
            "skipped_passes": run.skipped,
        },
        "rejected": [
            {"id": jobs[j].id, "line": jobs[j].line, "reason": reason}
            for j, reason in sorted(run.rejected.items())[:20]
        ],
    }


def _window(run: SimRun, start: float, end: float) -> dict[str, float | None]:
    """GPU utilization over [start, end] (the submission window), and the mean number of
    free GPUs over the whole run's time when some job was waiting."""
    times = _times(run)
    gpus = float(run.cluster.capacity.gpu)
    if len(times) == 0 or gpus <= 0:
        return {"gpu_utilization": None, "idle_gpus_waiting": None}
    pools, tenants = run.timeline.pool_steps(), run.timeline.tenant_steps()
    used = pools.per_sample(lambda v: v[:, 2])
    waiting = tenants.per_sample(lambda v: v[:, 0])
    nxt = np.append(times[1:], times[-1])
    out: dict[str, float | None] = {"gpu_utilization": None, "idle_gpus_waiting": None}
    if end > start:
        dt = np.clip(nxt, start, end) - np.clip(times, start, end)
        out["gpu_utilization"] = float((used * dt).sum() / (gpus * (end - start)))
    dt_all = nxt - times
    queued = (waiting > 0) * dt_all
    if queued.sum() > 0:
        out["idle_gpus_waiting"] = float(((gpus - used) * queued).sum() / queued.sum())
    return out


def _times(run: SimRun) -> Floats:
    return np.frombuffer(run.timeline.times, dtype=np.float64)


def _usage(run: SimRun, start: float, end: float) -> dict[str, Any]:
    """Time integrals over the timeline's step functions, on [start, end].

    Read from the timeline's changes (``Steps``): each tenant's integral costs its own
    changes, not a number per tenant at every event."""
    times = _times(run)
    cap = run.cluster.capacity
    capacity = np.array([cap.cpu_milli, cap.memory, cap.gpu], dtype=np.float64)
    span = end - start
    # Each sample holds until the next one (the last: until ``end``), clipped to the window;
    # ``measure[k]``: the time the samples before ``k`` hold.
    nxt = np.append(times[1:], max(end, float(times[-1]))) if len(times) else times
    dt = np.clip(nxt, start, end) - np.clip(times, start, end)
    measure = np.concatenate([[0.0], np.cumsum(dt)])
    pool_steps, steps = run.timeline.pool_steps(), run.timeline.tenant_steps()
    alloc_time = np.stack(
        [pool_steps.integral(pool_steps.values[:, r], measure) for r in range(3)], axis=1
    )  # pool x 3
    used = alloc_time.sum(axis=0)
    utilization = {
        name: (float(used[r] / (capacity[r] * span)) if capacity[r] and span > 0 else None)
        for r, name in enumerate(("cpu", "memory", "gpu"))
    }
    pools: dict[str, Any] = {}
    for p, pool in enumerate(run.cluster.pools):
        pc = pool.capacity
        pool_cap = (pc.cpu_milli, pc.memory, pc.gpu)
        pools[pool.name] = {
            f"{name}_utilization": (
                float(alloc_time[p, r] / (pool_cap[r] * span)) if pool_cap[r] and span > 0 else None
            )
            for r, name in enumerate(("cpu", "memory", "gpu"))
        }

    names = run.timeline.tenants
    trace_tenants = {j.tenant for j in run.jobs}
    in_trace = np.array([name in trace_tenants for name in names], dtype=bool)
    weights = np.array([run.cluster.tenant(name).weight for name in names])
    # Contended: every tenant of the trace has a job waiting.
    now_waiting = steps.per_sample(lambda v: v[:, 0] > 0, in_trace)
    contended_mask = (now_waiting == in_trace.sum()) if in_trace.any() else np.zeros(len(dt), bool)
    dt_c = dt * contended_mask
    measure_c = np.concatenate([[0.0], np.cumsum(dt_c)])
    held = steps.values[:, 1:].astype(np.float64)
    dominant = dominant_shares(steps.values[:, 1:], cap)
    dominant_time = steps.integral(dominant, measure)
    dominant_contended = steps.integral(dominant, measure_c)
    gpu_time = steps.integral(held[:, 2], measure)
    gpu_contended = steps.integral(held[:, 2], measure_c)
    cpu_time = steps.integral(held[:, 0], measure)
    contended_s = float(dt_c.sum())

    def share(values: Floats) -> Floats:
        total = float(values[in_trace].sum())
        return values / total if total > 0 else np.full(len(values), math.nan)

    gpu_share, gpu_share_c = share(gpu_time), share(gpu_contended)
    tenants = []
    for i, _ in enumerate(names):
        tenants.append(
            {
                "weight": float(weights[i]),
                "gpu_hours": float(gpu_time[i] / HOUR),
                "cpu_hours": float(cpu_time[i] / 1000 / HOUR),
                "dominant_share_mean": float(dominant_time[i] / span) if span > 0 else None,
                "gpu_share": _num(gpu_share[i]),
                "gpu_share_contended": _num(gpu_share_c[i]),
            }
        )
    w = weights[in_trace]
    return {
        "utilization": utilization,
        "pools": pools,
        "tenants": tenants,
        "jain": jain(list(dominant_time[in_trace] / w)),
        "jain_gpu": jain(list(gpu_time[in_trace] / w)),
        "jain_contended": jain(list(dominant_contended[in_trace] / w)) if contended_s > 0 else None,
        "contended_s": contended_s,
    }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
