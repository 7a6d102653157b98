"""Discretized least attained service (Tiresias's 2D-LAS), for short completion times.

A job's *attained service* is the GPU-time it has had so far (GPU-seconds over
all its attempts; CPU-only jobs count CPU-seconds / 1000, so that a core counts
a thousandth of a GPU).  Without knowing durations, the jobs that have had the
least service are most likely the shortest; running them first cuts mean JCT
on heavy-tailed GPU load (Tiresias: up to 5.5x over a capacity scheduler).

Service is *discretized* into a few levels by ``Policy.las_thresholds_gpu_s``
(level 0 below the first threshold, and so on), and jobs of one level keep
submission order, so that a job does not move down at every tick and two jobs
of like service do not take turns (Tiresias's reason for discretizing).

*Starvation guard*: a waiting job whose wait (since it was submitted, minus
the time it ran) reaches ``Policy.starvation_factor`` times the time it ran,
and at least ``Policy.starvation_min_s``, counts as level 0 again (Tiresias's
STARVELIMIT), so a long job is delayed but never starved.

The level is a sub-priority: within one priority, lower levels go first in the
queue (within a tenant: tenants are still ordered by fair share) and may
preempt running jobs of strictly higher levels (``preemption.py``).  Since
attained service only grows and a preemptor must be at a strictly lower level
than its victim, and a job never preempts the job that preempted it, no two
jobs evict each other back and forth.
"""

from __future__ import annotations

from bisect import bisect_right

from virtuai.scheduler.snapshot import PendingJob, Policy, RunningJob

__all__ = ["gpu_weight", "pending_level", "running_level"]


def gpu_weight(gpus: int, cpu_milli: int) -> float:
    """Service units per second of holding this much: GPUs, else CPUs / 1000."""
    return float(gpus) if gpus > 0 else cpu_milli / 1_000_000


def _level(attained: float, policy: Policy) -> int:
    return bisect_right(policy.las_thresholds_gpu_s, attained)


def running_level(job: RunningJob, now: float, policy: Policy) -> int:
    """The level of a running job: what it attained before, plus this attempt so far."""
    if not policy.las_thresholds_gpu_s:
        return 0
    total = job.total
    rate = gpu_weight(total.gpu, total.cpu_milli)
    return _level(job.attained_gpu_s + rate * max(0.0, now - job.started_at), policy)


def pending_level(job: PendingJob, now: float, policy: Policy) -> int:
    """The level of a waiting job, with the starvation guard applied."""
    if not policy.las_thresholds_gpu_s or job.attained_gpu_s <= 0:
        return 0
    total = job.total
    rate = gpu_weight(total.gpu, total.cpu_milli)
    ran = job.attained_gpu_s / rate if rate > 0 else 0.0
    waited = now - job.submitted_at - ran
    if policy.starvation_factor > 0 and waited >= max(
        policy.starvation_min_s, policy.starvation_factor * ran
    ):
        return 0
    return _level(job.attained_gpu_s, policy)
