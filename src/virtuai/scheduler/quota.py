"""Tenants' quotas during one pass: pool entries, cohorts that lend and borrow, and two views.

Every quota decision goes through ``QuotaLedger`` (semantics with examples in
``docs/scheduling.md``).  In short, per tenant, pool entry (``"*"`` = all pools)
and resource, with ``N`` nominal, ``B`` borrowing limit, ``L`` lending limit:

- a job is charged to its tenant's ``"*"`` entry and to the entry of each pool
  its tasks land in (tenants without an entry for a pool are not limited there);
- without a cohort, usage may not pass ``N`` (v1's hard quota);
- in a cohort, each member keeps ``N - L`` for itself and puts ``L`` into a
  pool shared with the members' entries of the same pool key; what a member
  holds beyond its own ``N - L`` is drawn from that shared pool, which may never
  be overdrawn, and a member may not hold more than ``N + B``.  So whatever one
  member borrows is unused nominal quota of others, within their lending limits.

Two views, because preemption is not instant: victims hold their quota until
they stop.  The *now* view (``usage``) counts them and also counts what
preemptors have been promised, so admissions stay within limits both now and
after the victims stop.  The *future* view (``usage - leaving``) is what remains
once every preempting job has stopped; preemption trials use it, so that two
preemptors of one pass do not both claim the room one victim frees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter

from virtuai.domain.resources import RESOURCE_NAMES, Resources, format_amount
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.domain.workload import TaskPlacement
from virtuai.scheduler.snapshot import PendingJob, RunningJob, TenantState

__all__ = ["UNLIMITED", "Charge", "Entry", "QuotaLedger"]

UNLIMITED = Quota()


def _limits(quota: Quota) -> list[int | None]:
    return [quota.cpu_milli, quota.memory, quota.gpu]


class Group:
    """The shared lending pool of one cohort for one pool key."""

    __slots__ = ("cohort", "lendable", "pool", "used", "used_future")

    def __init__(self, cohort: str, pool: str) -> None:
        self.cohort = cohort
        self.pool = pool
        self.lendable = [0, 0, 0]  # sum of the members' lendable nominal quota
        self.used = [0, 0, 0]  # sum of what members draw from it (now view)
        self.used_future = [0, 0, 0]  # the same once preempting jobs have stopped


class Entry:
    """One tenant's quota in one pool key, and what it holds there."""

    __slots__ = (
        "ceiling",
        "fresh",
        "group",
        "guaranteed",
        "leaving",
        "nominal",
        "pool",
        "tenant",
        "usage",
    )

    def __init__(self, tenant: str, quota: PoolQuota, group: Group | None) -> None:
        self.tenant = tenant
        self.pool = quota.pool
        self.nominal = _limits(quota.nominal)
        borrow = _limits(quota.borrowing_limit)
        lend = _limits(quota.lending_limit)
        self.ceiling: list[int | None] = []
        self.guaranteed: list[int] = []
        for r, nominal in enumerate(self.nominal):
            extra = borrow[r]
            self.ceiling.append(None if nominal is None or extra is None else nominal + extra)
            limit = lend[r]
            lendable = 0 if nominal is None else nominal if limit is None else min(limit, nominal)
            self.guaranteed.append(0 if nominal is None else nominal - max(0, lendable))
        self.group = group
        self.usage = [0, 0, 0]  # held now, plus what preemptors were promised
        self.leaving = [0, 0, 0]  # held now by preempted jobs that are stopping
        self.fresh = [0, 0, 0]  # admitted or promised in this pass (in ``usage`` too)

    def draw(self, r: int, held: int) -> int:
        """What holding ``held`` of resource ``r`` takes from the cohort's shared pool."""
        if self.nominal[r] is None:
            return 0
        return max(0, held - self.guaranteed[r])

    def where(self) -> str:
        return "" if self.pool == ANY_POOL else f" in pool {self.pool}"


# What one job holds, per entry: (entry, cpu, memory, gpu).
Charge = tuple[tuple[Entry, int, int, int], ...]


class QuotaLedger:
    """Quota entries, cohorts and usage of every tenant in the snapshot.

    A tenant missing from the snapshot has no quota (nothing to enforce); the
    control plane always includes every tenant with pending or running work.
    """

    def __init__(
        self,
        tenants: Iterable[TenantState],
        running: Sequence[RunningJob] = (),
        pool_of: Mapping[str, str] | None = None,
        *,
        borrowing: bool = True,
        usage_complete: bool = False,
    ) -> None:
        """``usage_complete``: ``Snapshot.usage_complete`` (each tenant's usage already sums
        its running jobs)."""
        self._pool_of = pool_of or {}
        self._entries: dict[str, dict[str, Entry]] = {}
        self._groups: dict[tuple[str, str], Group] = {}
        usage: dict[str, Resources] = {}
        for tenant in sorted(tenants, key=lambda t: t.name):
            usage[tenant.name] = tenant.usage
            whole = tenant.quota
            if not tenant.quotas and whole.cpu_milli is whole.memory is whole.gpu is None:
                self._entries[tenant.name] = {}  # the common case, made short: no limit
                continue
            quotas = {q.pool: q for q in tenant.quotas}
            quotas.setdefault(ANY_POOL, PoolQuota(ANY_POOL, tenant.quota))
            entries = self._entries[tenant.name] = {}
            for key in sorted(quotas):
                quota = quotas[key]
                if _limits(quota.nominal) == [None, None, None]:
                    continue  # unlimited: nothing to enforce, nothing to lend
                group = None
                if borrowing and tenant.cohort is not None:
                    group = self._groups.get((tenant.cohort, key))
                    if group is None:
                        group = self._groups[(tenant.cohort, key)] = Group(tenant.cohort, key)
                entry = entries[key] = Entry(tenant.name, quota, group)
                if group is not None:
                    for r, nominal in enumerate(entry.nominal):
                        if nominal is not None:
                            group.lendable[r] += nominal - entry.guaranteed[r]
        self._add_usage(usage, running, usage_complete)

    def _add_usage(
        self, usage: dict[str, Resources], running: Sequence[RunningJob], complete: bool
    ) -> None:
        if not any(self._entries.values()):
            return  # no tenant has a limit: nothing to count against
        held: dict[str, list[int]] = {}
        for job in () if complete else running:
            total = job.total
            sums = held.setdefault(job.tenant, [0, 0, 0])
            sums[0] += total.cpu_milli
            sums[1] += total.memory
            sums[2] += total.gpu
        for tenant, entries in self._entries.items():
            star = entries.get(ANY_POOL)
            if star is None:
                continue
            given = usage.get(tenant, Resources())
            sums = held.get(tenant, [0, 0, 0])
            amounts = (
                max(given.cpu_milli, sums[0]),
                max(given.memory, sums[1]),
                max(given.gpu, sums[2]),
            )
            self._apply(((star, *amounts),), 1, leaving=False)
        # "*" was counted above from the tenant totals; pool entries come from placements.
        # Most tenants have none: their jobs' placements are read only if they are leaving.
        pooled = {tenant for tenant in self._entries if self.has_pool_entries(tenant)}
        # (Without pool entries only the preempting jobs are read: picked out at C speed,
        # as this runs every pass over every running job.)
        for job in running if pooled else filter(attrgetter("preempting"), running):
            if job.tenant not in pooled and not (job.preempting and self._entries.get(job.tenant)):
                continue
            charge = self.charge_of_placements(job.tenant, job.placements)
            self._apply(tuple(c for c in charge if c[0].pool != ANY_POOL), 1, leaving=False)
            if job.preempting:
                self._apply(charge, 1, leaving=True)

    # --- charges -----------------------------------------------------------------------

    def limits_anyone(self) -> bool:
        """Whether any tenant has a quota entry (else no job is ever held back by quota)."""
        return any(self._entries.values())

    def has_cohorts(self) -> bool:
        """Whether some quota entry lends to or borrows from a cohort (then a job may
        reclaim lent quota by preemption)."""
        return bool(self._groups)

    def only_hard_limits_within(self, totals: Iterable[tuple[int, int, int]]) -> bool:
        """Whether every quota entry is a hard limit on a tenant's whole usage (no cohort
        to borrow from or lend to, no entry for a single pool) and every job of these
        (cpu, memory, gpu) totals is within the tightest of them.  Then no job is ever
        deferred as a borrower or reclaims, and none of those is refused by its quota
        (``never_reason``), whatever its tenant."""
        tightest: list[int | None] = [None, None, None]
        for entries in self._entries.values():
            for key, entry in entries.items():
                if key != ANY_POOL or entry.group is not None:
                    return False
                for r, nominal in enumerate(entry.nominal):
                    if nominal is not None:
                        least = tightest[r]
                        tightest[r] = nominal if least is None else min(least, nominal)
        return not any(
            limit is not None and ask > limit
            for asks in totals
            for limit, ask in zip(tightest, asks, strict=True)
        )

    def has_pool_entries(self, tenant: str) -> bool:
        """Whether ``tenant`` has quota entries for single pools (then a pool-less job's
        charge is known only once it is placed)."""
        entries = self._entries.get(tenant)
        return entries is not None and any(key != ANY_POOL for key in entries)

    def charge_of_job(self, job: PendingJob) -> Charge:
        """The charge of ``job`` if it lands in the pool it names (``"*"`` only if none)."""
        entries = self._entries.get(job.tenant)
        if not entries:
            return ()
        total = job.total
        amounts = (total.cpu_milli, total.memory, total.gpu)
        charge = []
        star = entries.get(ANY_POOL)
        if star is not None:
            charge.append((star, *amounts))
        if job.pool is not None:
            entry = entries.get(job.pool)
            if entry is not None:
                charge.append((entry, *amounts))
        return tuple(charge)

    def charge_of_placements(self, tenant: str, placements: Iterable[TaskPlacement]) -> Charge:
        """The charge of tasks placed as ``placements``: all to ``"*"``, each to its node's pool."""
        entries = self._entries.get(tenant)
        if not entries:
            return ()
        per_pool: dict[str, list[int]] = {}
        total = [0, 0, 0]
        for p in placements:
            amounts = per_pool.setdefault(self._pool_of.get(p.node, ""), [0, 0, 0])
            for sums in (amounts, total):
                sums[0] += p.resources.cpu_milli
                sums[1] += p.resources.memory
                sums[2] += p.resources.gpu
        charge = []
        star = entries.get(ANY_POOL)
        if star is not None:
            charge.append((star, total[0], total[1], total[2]))
        for pool in sorted(per_pool):
            entry = entries.get(pool)
            if entry is not None and pool != ANY_POOL:
                a = per_pool[pool]
                charge.append((entry, a[0], a[1], a[2]))
        return tuple(charge)

    # --- checks ------------------------------------------------------------------------

    def blocked_reason(
        self, charge: Charge, *, future: bool = False, may_borrow: bool = True
    ) -> str | None:
        """Why holding ``charge`` more would break a quota, or ``None`` if it fits.

        Only resources the job asks for count: a tenant over its GPU quota (say,
        after the quota was lowered) may still run CPU-only work.  ``may_borrow``
        false keeps the job within nominal quota (jobs that cannot be preempted).
        """
        for entry, *asks in charge:
            group = entry.group
            for r, a in enumerate(asks):
                nominal = entry.nominal[r]
                if a <= 0 or nominal is None:
                    continue
                u = entry.usage[r] - entry.leaving[r] if future else entry.usage[r]
                if group is None:
                    if u + a > nominal:
                        return _uses(entry, r, u)
                    continue
                if u + a > nominal and not may_borrow:
                    return _uses(entry, r, u) + "; a job that cannot be preempted does not borrow"
                ceiling = entry.ceiling[r]
                if ceiling is not None and u + a > ceiling:
                    name = RESOURCE_NAMES[r]
                    return (
                        f"{_uses(entry, r, u)}, and may borrow at most "
                        f"{format_amount(name, ceiling - nominal)} {name} more than that"
                    )
                used = group.used_future[r] if future else group.used[r]
                extra = entry.draw(r, u + a) - entry.draw(r, u)
                if used + extra > group.lendable[r]:
                    if u + a <= nominal:
                        return (
                            f"{_uses(entry, r, u)}; the rest is lent to cohort {group.cohort} "
                            "until the borrowers' jobs end"
                        )
                    name = RESOURCE_NAMES[r]
                    left = format_amount(name, max(0, group.lendable[r] - used))
                    return f"{_uses(entry, r, u)}; cohort {group.cohort} has {left} {name} to lend"
        return None

    def borrows(self, charge: Charge) -> bool:
        """Whether holding ``charge`` more takes some entry above its nominal quota in a cohort."""
        for entry, *asks in charge:
            if entry.group is None:
                continue
            for r, a in enumerate(asks):
                nominal = entry.nominal[r]
                if a > 0 and nominal is not None and entry.usage[r] + a > nominal:
                    return True
        return False

    def reclaim_groups(self, charge: Charge) -> list[tuple[Group, int]] | None:
        """The (cohort pool, resource) pairs a job may reclaim lent quota in, or ``None``.

        ``None`` unless the job fits within its tenant's nominal quota (future
        view) everywhere it asks for something: only a lender reclaims.
        """
        groups: list[tuple[Group, int]] = []
        for entry, *asks in charge:
            for r, a in enumerate(asks):
                nominal = entry.nominal[r]
                if a <= 0 or nominal is None:
                    continue
                if entry.usage[r] - entry.leaving[r] + a > nominal:
                    return None
                if entry.group is not None:
                    groups.append((entry.group, r))
        return groups

    def is_borrowing(self, tenant: str, groups: Sequence[tuple[Group, int]]) -> bool:
        """Whether ``tenant``'s running jobs hold more than its nominal quota in one of ``groups``.

        Counted on the jobs running when the pass began, less those leaving:
        what the pass admits or promises does not make a tenant a borrower
        whose older jobs could then be reclaimed in the same pass.
        """
        entries = self._entries.get(tenant)
        if not entries:
            return False
        for group, r in groups:
            entry = entries.get(group.pool)
            if entry is None or entry.group is not group:
                continue
            nominal = entry.nominal[r]
            held = entry.usage[r] - entry.leaving[r] - entry.fresh[r]
            if nominal is not None and held > nominal:
                return True
        return False

    def never_reason(
        self, job: PendingJob, charge: Charge | None = None, *, may_borrow: bool = True
    ) -> str | None:
        """Why ``job`` can never fit its tenant's quota, even borrowing all it may, or ``None``.

        ``charge``: ``charge_of_job(job)``, if the caller has it already.  ``may_borrow``
        false: the job may not borrow at all (as ``blocked_reason``'s), so its tenant's
        nominal quota is all it can ever hold.
        """
        total = job.total
        for entry, *asks in self.charge_of_job(job) if charge is None else charge:
            for r, a in enumerate(asks):
                nominal = entry.nominal[r]
                if nominal is None or a <= nominal:
                    continue
                name = RESOURCE_NAMES[r]
                group, ceiling = entry.group, entry.ceiling[r]
                if group is None or not may_borrow:
                    why = (
                        "" if group is None else "; a job that cannot be preempted does not borrow"
                    )
                    return (
                        f"needs {format_amount(name, a)} {name} in total but tenant "
                        f"{job.tenant} has a quota of {format_amount(name, nominal)} {name}"
                        f"{entry.where()}{why}"
                    )
                most = entry.guaranteed[r] + group.lendable[r]
                most = most if ceiling is None else min(most, ceiling)
                if a > most:
                    return (
                        f"needs {format_amount(name, total.amount(name))} {name} in total but "
                        f"tenant {job.tenant} may hold at most {format_amount(name, most)} {name}"
                        f"{entry.where()} (a quota of {format_amount(name, nominal)} {name} "
                        f"plus what it may borrow in cohort {group.cohort})"
                    )
        return None

    # --- changes -----------------------------------------------------------------------

    def charge(self, charge: Charge) -> None:
        """Count ``charge`` as held for the rest of the pass (an admission or a promise)."""
        self._apply(charge, 1, leaving=False)
        self._fresh(charge, 1)

    def refund(self, charge: Charge) -> None:
        """Undo ``charge``."""
        self._apply(charge, -1, leaving=False)
        self._fresh(charge, -1)

    @staticmethod
    def _fresh(charge: Charge, sign: int) -> None:
        for entry, *asks in charge:
            fresh = entry.fresh
            for r, a in enumerate(asks):
                fresh[r] += sign * a

    def leave(self, charge: Charge) -> None:
        """Mark ``charge`` as leaving: held now, gone in the future view (a victim)."""
        self._apply(charge, 1, leaving=True)

    def unleave(self, charge: Charge) -> None:
        """Undo ``leave``."""
        self._apply(charge, -1, leaving=True)

    def usage_of(self, tenant: str, pool: str = ANY_POOL) -> Resources:
        entry = self._entries.get(tenant, {}).get(pool)
        return Resources(*entry.usage) if entry else Resources()

    def _apply(self, charge: Charge, sign: int, *, leaving: bool) -> None:
        for entry, *asks in charge:
            group = entry.group
            usage, gone = entry.usage, entry.leaving
            for r, a in enumerate(asks):
                if a == 0:
                    continue
                if group is None or entry.nominal[r] is None:
                    if leaving:
                        gone[r] += sign * a
                    else:
                        usage[r] += sign * a
                    continue
                before_now = entry.draw(r, usage[r])
                before_future = entry.draw(r, usage[r] - gone[r])
                if leaving:
                    gone[r] += sign * a
                else:
                    usage[r] += sign * a
                group.used[r] += entry.draw(r, usage[r]) - before_now
                group.used_future[r] += entry.draw(r, usage[r] - gone[r]) - before_future


def _uses(entry: Entry, r: int, used: int) -> str:
    name = RESOURCE_NAMES[r]
    nominal = entry.nominal[r]
    assert nominal is not None
    return (
        f"waiting for quota: tenant {entry.tenant} uses {format_amount(name, used)} "
        f"of {format_amount(name, nominal)} {name}{entry.where()}"
    )
