"""Each job's completion time in an isolated cluster of its tenant's share (Themis's T_id).

Themis (Mahajan et al., NSDI 2020) calls a sharing scheme fair when every job's
rho = T_shared / T_id is at most 1, T_id being the job's completion time had
its tenant run alone on 1/N of the cluster.  Two estimates of T_id:

``simulate`` (default)
    Replay each tenant's jobs alone, under one common *reference* policy
    (``REFERENCE``: priority-FIFO with EASY backfill, no preemption), on a slice of the
    cluster: every pool keeps ``round(count x share)`` nodes (at least one), with
    ``share`` = the tenant's weight / the sum of the weights of the trace's
    tenants (1/N for equal weights), and no quota (the slice is the limit).  This
    counts the queueing a tenant causes itself.  A job that cannot run at all on
    the slice (a gang larger than it) gets the ``scale`` estimate instead; the
    report counts these as ``isolated_fallbacks``.
``scale``
    No replay: T_id = run x max(1, d / share), d being the job's dominant share
    of the whole cluster: a job that fits in its tenant's slice runs at once, a
    bigger one as if slowed down to fit.  Fast, but blind to queueing.

One reference for every policy compared makes rho comparable across them
(replaying each policy's isolated run under that same policy made plain FIFO
look fairer than backfill only because its own T_id was worse), and the
isolated replays are then made once per trace, not once per policy.

On a long trace the isolated replays cost as much as a policy's own replay, or more
(a heavy tenant alone on its slice queues far longer than in the shared cluster).
They depend on the trace alone, so ``IsolatedReplays.start`` runs them in worker
processes beside the policies' replays when the trace is long and a core is spare.
"""

from __future__ import annotations

import enum
import heapq
import math
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from virtuai.sim.cluster import ClusterSpec
from virtuai.sim.engine import Outcome, SimRun, replay_order, simulate
from virtuai.sim.policy import Backfill, Order, PolicySpec
from virtuai.sim.trace import TraceJob

__all__ = ["PARALLEL_MIN_JOBS", "REFERENCE", "IsolatedReplays", "Isolation", "isolated_jct"]

REFERENCE = PolicySpec(
    "reference",
    Order.FIFO,
    backfill=Backfill.EASY,
    description="T_id reference: priority-FIFO with EASY backfill, no preemption",
)


class Isolation(enum.StrEnum):
    SIMULATE = "simulate"
    SCALE = "scale"


# Traces shorter than this replay their tenants alone in the caller: starting worker
# processes costs about a second, more than such replays take.
PARALLEL_MIN_JOBS = 20_000


def tenant_shares(jobs: Sequence[TraceJob], cluster: ClusterSpec) -> dict[str, float]:
    """Each trace tenant's share: its weight over the sum of the weights."""
    names = sorted({job.tenant for job in jobs})
    weights = {name: cluster.tenant(name).weight for name in names}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def isolated_jct(
    run: SimRun,
    method: Isolation = Isolation.SIMULATE,
    *,
    tick_s: float = 0.0,
    reference: PolicySpec = REFERENCE,
    note: Callable[[str], None] | None = None,
) -> tuple[list[float], int]:
    """``(T_id per job of run.jobs (NaN for jobs that did not finish), fallbacks)``.

    ``fallbacks`` counts the jobs whose T_id fell back to the ``scale`` estimate
    because they cannot run on their tenant's slice.  ``note`` hears of each tenant's
    replay as it starts (on a long trace they take minutes together).
    """
    replays = IsolatedReplays(
        run.jobs, run.cluster, method, tick_s=tick_s, reference=reference, workers=0
    )
    return replays.result(note)


def spare_cores() -> int:
    """Cores this process may use, but the one it runs on."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return (len(usable) if usable is not None else os.cpu_count() or 1) - 1


class IsolatedReplays:
    """The isolated replays of one trace, each tenant's jobs alone on its slice: under
    way in ``workers`` processes from the start, or (none) made in the caller by
    ``result``.  ``close`` stops the workers (a replay abandoned half way).

    The workers are forked, not spawned: they start with the trace in memory (nothing
    to pickle but their results) and import nothing anew (a spawned worker re-runs the
    caller's main module, which a script without a ``__main__`` guard cannot survive).
    So start them before the caller starts a thread (a progress bar's)."""

    def __init__(
        self,
        jobs: Sequence[TraceJob],
        cluster: ClusterSpec,
        method: Isolation,
        *,
        tick_s: float = 0.0,
        reference: PolicySpec = REFERENCE,
        workers: int = 0,
    ) -> None:
        """``jobs`` in replay order, and ``cluster`` with a spec for each of their tenants
        (``SimRun.jobs`` and ``SimRun.cluster``)."""
        self.jobs, self.cluster, self.method = jobs, cluster, method
        self.tick_s, self.reference = tick_s, reference
        self.shares = tenant_shares(jobs, cluster)
        self._workers: list[tuple[BaseProcess, Connection]] = []
        if method is Isolation.SIMULATE and workers > 0 and self.shares:
            self._fork(min(workers, len(self.shares)))

    @classmethod
    def start(
        cls,
        jobs: Sequence[TraceJob],
        cluster: ClusterSpec,
        method: Isolation,
        *,
        tick_s: float = 0.0,
        workers: int | None = None,
    ) -> IsolatedReplays:
        """The isolated replays of the trace ``jobs`` on ``cluster``, as a replay of it
        will number them; in worker processes (``workers``, by default one per spare core
        if the trace has ``PARALLEL_MIN_JOBS`` jobs or more) while the caller goes on."""
        ordered = replay_order(jobs)
        if workers is None:
            workers = spare_cores() if len(ordered) >= PARALLEL_MIN_JOBS else 0
        return cls(
            ordered,
            cluster.with_tenants(j.tenant for j in ordered),
            method,
            tick_s=tick_s,
            workers=workers,
        )

    def result(self, note: Callable[[str], None] | None = None) -> tuple[list[float], int]:
        """``(T_id per job (NaN for jobs that did not finish), fallbacks)``, as
        ``isolated_jct``; waits for the workers, if any."""
        scaled = _scaled(self.jobs, self.cluster, self.shares)
        if self.method is Isolation.SCALE:
            return scaled, 0
        try:
            done = self._collect(note)
        finally:
            self.close()
        iso = [math.nan] * len(self.jobs)
        number = {job.id: j for j, job in enumerate(self.jobs)}
        fallbacks = 0
        for tenant in self.shares:
            for job_id, t_id in done[tenant]:
                j = number[job_id]
                if t_id is None:
                    iso[j] = scaled[j]
                    fallbacks += 1
                else:
                    iso[j] = t_id
        return iso, fallbacks

    def close(self) -> None:
        """Stop the workers, if any are left."""
        for process, conn in self._workers:
            process.terminate()
            process.join()
            conn.close()
        self._workers = []

    def _fork(self, workers: int) -> None:
        """Deal the tenants to ``workers`` forked processes, the biggest first, each to
        the least loaded so far; each sends back its tenants' completion times."""
        mine = self._per_tenant()
        loads = [(0, k) for k in range(workers)]  # (jobs dealt, worker), a heap
        dealt: list[list[str]] = [[] for _ in range(workers)]
        for tenant in sorted(mine, key=lambda t: len(mine[t]), reverse=True):
            jobs, k = loads[0]
            dealt[k].append(tenant)
            heapq.heapreplace(loads, (jobs + len(mine[tenant]), k))
        context = multiprocessing.get_context("fork")
        for tenants in dealt:
            if not tenants:
                continue
            receive, send = context.Pipe(duplex=False)
            work = [(t, mine[t], self._slice(t)) for t in tenants]
            process = context.Process(
                target=_replay_in_worker,
                args=(send, work, self.reference, self.tick_s),
                name="virtuai-isolated",
                daemon=True,
            )
            process.start()
            send.close()  # (the worker's end: its exit is then an end of file here)
            self._workers.append((process, receive))

    def _collect(
        self, note: Callable[[str], None] | None
    ) -> dict[str, list[tuple[str, float | None]]]:
        """Each tenant's completion times: from the workers, or replayed here."""
        count = len(self.shares)
        done: dict[str, list[tuple[str, float | None]]] = {}
        if not self._workers:
            mine = self._per_tenant()
            for place, tenant in enumerate(self.shares, start=1):
                if note is not None:
                    note(
                        f"isolated replay {place} of {count}: tenant {tenant}, "
                        f"{len(mine[tenant]):,} jobs"
                    )
                done[tenant] = _alone(
                    mine[tenant], self._slice(tenant), self.reference, self.tick_s
                )
            return done
        if note is not None:
            workers = len(self._workers)
            note(f"waiting for the {count} isolated replays ({workers} worker processes)")
        for process, conn in self._workers:
            try:
                message = conn.recv()
            except EOFError:
                message = {}  # (the worker died: its tenants are named below)
            if isinstance(message, BaseException):
                raise message
            done.update(message)
            process.join()
        lost = [t for t in self.shares if t not in done]
        if lost:
            raise RuntimeError(
                f"the worker process of the isolated replays of {', '.join(lost)} ended "
                "without their results"
            )
        return done

    def _per_tenant(self) -> dict[str, list[TraceJob]]:
        mine: dict[str, list[TraceJob]] = {tenant: [] for tenant in self.shares}
        for job in self.jobs:
            mine[job.tenant].append(job)
        return mine

    def _slice(self, tenant: str) -> ClusterSpec:
        return self.cluster.sliced(self.shares[tenant], tenant)


def _replay_in_worker(
    send: Connection,
    work: list[tuple[str, list[TraceJob], ClusterSpec]],
    reference: PolicySpec,
    tick_s: float,
) -> None:
    """A worker: its tenants' completion times alone, sent once all are done (a send
    blocks until the caller reads, and the caller reads once its own replays are done);
    an error is sent in their place (a replay that stalled, say)."""
    # (Ctrl-C reaches the whole process group: the caller stops its workers itself.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        done = {tenant: _alone(jobs, cluster, reference, tick_s) for tenant, jobs, cluster in work}
    except Exception as exc:  # (raised in the caller instead)
        send.send(exc)
    else:
        send.send(done)
    finally:
        send.close()


def _alone(
    jobs: list[TraceJob], cluster: ClusterSpec, reference: PolicySpec, tick_s: float
) -> list[tuple[str, float | None]]:
    """Each job's completion time replayed alone on ``cluster`` (None: it did not run)."""
    alone = simulate(jobs, cluster, reference, tick_s=tick_s)
    return [
        (
            job.id,
            alone.finish[k] - job.submit
            if alone.outcome[k] in (Outcome.SUCCEEDED, Outcome.TIMED_OUT)
            else None,
        )
        for k, job in enumerate(alone.jobs)
    ]


def _scaled(
    jobs: Sequence[TraceJob], cluster: ClusterSpec, shares: dict[str, float]
) -> list[float]:
    cap = cluster.capacity
    capacity = (cap.cpu_milli, cap.memory, cap.gpu)
    out = []
    for job in jobs:
        total = job.total
        demand = max(
            (
                amount / whole
                for amount, whole in zip(
                    (total.cpu_milli, total.memory, total.gpu), capacity, strict=True
                )
                if whole
            ),
            default=0.0,
        )
        out.append(job.run_s * max(1.0, demand / shares[job.tenant]))
    return out
