"""Where a job runs when it lets the platform choose (``--site any``), and why.

When the job fits in the free room of this platform's nodes now, it runs here
(nothing starts sooner; this costs what the choice always cost).  Otherwise
each place (this platform's nodes, each active and reachable site) is a
candidate.  A candidate is out when the job could never run there: the
scheduler's own "never" answer over its nodes (CPUs, memory and GPUs per node,
the tenant's quota in its pool) or, for a site, a time limit above its
partition's.  The others are ranked by when the job would start:

- the ledger first (one scheduling pass per candidate over one snapshot):
  waiting for quota puts a candidate last; else its expected start here
  (backfill's reservation), now if it would be admitted at once;
- then, for a site, Slurm's own backlog: ``sites.expected_wait_s``, from
  ``squeue --start`` (``control.sites``); unknown ranks after every known wait.

Ties go to this platform's nodes, then to the site with the shorter queue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.domain.resources import Resources
from virtuai.domain.sites import LOCAL_SITE, SiteState, is_site_pool
from virtuai.errors import InvalidRequest
from virtuai.scheduler import never_reason, plan
from virtuai.scheduler.snapshot import BlockKind, PendingJob, Snapshot
from virtuai.services.planning import SchedulingRules, snapshot_now
from virtuai.services.sites import site_for_job
from virtuai.store.models import SiteRow

LOCAL = LOCAL_SITE


@dataclass(frozen=True, slots=True)
class Candidate:
    site: str  # a site's name, or "local"
    pool: str | None
    feasible: bool
    why: str  # why not, or what its expected start rests on
    expected_wait_s: int | None = None  # None: unknown (or infeasible)
    quota_wait: bool = False

    def rank(self, depth: int) -> tuple[int, int, int, int, str]:
        unknown = self.expected_wait_s is None
        return (
            int(self.quota_wait),
            int(unknown),
            self.expected_wait_s or 0,
            0 if self.site == LOCAL else 1 + depth,
            self.site,
        )


@dataclass(frozen=True, slots=True)
class SiteChoice:
    pool: str | None
    site: str | None  # None: this platform's nodes
    why: str
    candidates: tuple[Candidate, ...] = ()


def partition_limit(row: SiteRow, walltime_s: int) -> str | None:
    """Why the site's partition cannot take a job of this time limit (None: it can)."""
    for part in row.partitions or []:
        if part.get("name") == row.partition:
            limit = part.get("max_time_s")
            if isinstance(limit, int) and walltime_s > limit:
                return (
                    f"its time limit {walltime_s} s is above partition {row.partition}'s "
                    f"{limit} s at site {row.name}"
                )
    return None


def choose_site(
    session: Session, rules: SchedulingRules, site: str | None, job: PendingJob, now: dt.datetime
) -> SiteChoice:
    """The pool for ``--site`` (None: here; a name: that site's; ``any``: the best)."""
    if site is None:
        return SiteChoice(None, None, "no site asked for: this platform's nodes")
    if site != "any":
        row = site_for_job(session, site)
        limit = partition_limit(row, job.walltime_s or 0)
        if limit is not None:
            raise InvalidRequest(limit, field="time")
        return SiteChoice(row.pool, row.name, f"pinned to site {row.name}")
    # The common case first, as cheap as it was: it fits in the free room here now, and
    # nothing starts sooner than now (the sites are still listed, by their backlog).
    quick = snapshot_now(session, rules, now, with_queue=False)
    fits_here = never_reason(quick, job) is None and job.total.fits_in(_local_free(quick))
    snapshot = quick if fits_here else snapshot_now(session, rules, now, with_queue=True)
    rows = list(
        session.scalars(
            select(SiteRow)
            .where(SiteRow.state == SiteState.ACTIVE.value, SiteRow.health != "unreachable")
            .order_by(SiteRow.name)
        )
    )
    if fits_here:
        candidates = [Candidate(LOCAL, None, True, "fits in the free room here now", 0)]
        candidates += [_backlog_only(snapshot, job, row) for row in rows]
    else:
        candidates = [_candidate(snapshot, job, LOCAL, None, None)]
        candidates += [_candidate(snapshot, job, row.name, row.pool, row) for row in rows]
    depth = {row.name: row.queue_depth for row in rows}
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        return SiteChoice(None, None, "it fits nowhere: it stays here", tuple(candidates))
    best = min(feasible, key=lambda c: c.rank(depth.get(c.site, 0)))
    where = "this platform's nodes" if best.site == LOCAL else f"site {best.site}"
    return SiteChoice(
        best.pool,
        None if best.site == LOCAL else best.site,
        f"{where}: {best.why}",
        tuple(candidates),
    )


def _candidate(
    snapshot: Snapshot, job: PendingJob, name: str, pool: str | None, row: SiteRow | None
) -> Candidate:
    there = dataclasses.replace(job, pool=pool)
    never = never_reason(snapshot, there)
    if never is None and row is not None:
        never = partition_limit(row, job.walltime_s or 0)
    if never is not None:
        return Candidate(name, pool, False, never)
    answer = plan(snapshot, there)
    if answer.kind is BlockKind.QUOTA:
        return Candidate(name, pool, True, answer.reason or "waiting for quota", quota_wait=True)
    ledger = 0 if answer.starts_now else None
    if not answer.starts_now and answer.expected_start is not None:
        ledger = max(0, int(answer.expected_start - snapshot.now))
    if row is None:
        why = (
            "starts now"
            if ledger == 0
            else f"expected to start in {_s(ledger)}"
            if ledger is not None
            else f"waits ({answer.reason or 'no expected start yet'})"
        )
        return Candidate(name, pool, True, why, ledger)
    slurm = row.expected_wait_s
    if ledger is None or slurm is None:
        return Candidate(name, pool, True, "Slurm gives no expected start (squeue --start)")
    wait = max(ledger, slurm)
    return Candidate(name, pool, True, f"Slurm's backlog: expected to start in {_s(wait)}", wait)


def _local_free(snapshot: Snapshot) -> Resources:
    free = Resources()
    for state in snapshot.nodes:
        if not is_site_pool(state.node.pool):
            free += state.node.capacity - state.allocated
    return free


def _backlog_only(snapshot: Snapshot, job: PendingJob, row: SiteRow) -> Candidate:
    """A site weighed by feasibility and Slurm's backlog only (no ledger pass)."""
    there = dataclasses.replace(job, pool=row.pool)
    never = never_reason(snapshot, there) or partition_limit(row, job.walltime_s or 0)
    if never is not None:
        return Candidate(row.name, row.pool, False, never)
    wait = row.expected_wait_s
    if wait is None:
        return Candidate(row.name, row.pool, True, "Slurm gives no expected start")
    return Candidate(
        row.name, row.pool, True, f"Slurm's backlog: expected to start in {_s(wait)}", wait
    )


def _s(seconds: int | None) -> str:
    return "?" if seconds is None else f"{seconds} s"
