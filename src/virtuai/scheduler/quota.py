"""Tenants' hard quotas during one pass: what each holds, and whether one more job fits.

Usage starts from the snapshot (work admitted earlier and not yet finished) and
grows as this pass admits jobs, so two jobs of one tenant cannot both squeeze
into the last free slice of its quota.  Cohort borrowing will extend
``QuotaLedger.blocked_reason`` (lend unused quota of a cohort's members), so
every quota decision goes through this one class.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtuai.domain.resources import RESOURCE_NAMES, Resources, format_amount
from virtuai.domain.tenancy import Quota
from virtuai.scheduler.snapshot import PendingJob, TenantState

__all__ = ["UNLIMITED", "QuotaLedger"]

UNLIMITED = Quota()

_Limits = tuple[int | None, int | None, int | None]


class QuotaLedger:
    """Quota and running usage of every tenant in the snapshot.

    A tenant missing from the snapshot has no quota (nothing to enforce) and
    no usage; the control plane always includes every tenant with pending work.
    """

    def __init__(self, tenants: Iterable[TenantState]) -> None:
        self._quota: dict[str, Quota] = {}
        self._limits: dict[str, _Limits] = {}
        self._usage: dict[str, list[int]] = {}
        for tenant in tenants:
            quota = tenant.quota
            self._quota[tenant.name] = quota
            self._limits[tenant.name] = (quota.cpu_milli, quota.memory, quota.gpu)
            usage = tenant.usage
            self._usage[tenant.name] = [usage.cpu_milli, usage.memory, usage.gpu]

    def quota_of(self, tenant: str) -> Quota:
        return self._quota.get(tenant, UNLIMITED)

    def usage_of(self, tenant: str) -> Resources:
        usage = self._usage.get(tenant)
        return Resources(*usage) if usage else Resources()

    def blocked_reason(self, job: PendingJob) -> str | None:
        """Why admitting ``job`` now would break its tenant's quota, or ``None`` if it fits.

        Only resources the job asks for count: a tenant that is over its GPU
        quota (say, after the quota was lowered) may still run CPU-only work.
        """
        limits = self._limits.get(job.tenant)
        if limits is None or limits == (None, None, None):
            return None
        usage = self._usage[job.tenant]
        total = job.total
        asks = (total.cpu_milli, total.memory, total.gpu)
        for i, limit in enumerate(limits):
            if limit is not None and asks[i] > 0 and usage[i] + asks[i] > limit:
                name = RESOURCE_NAMES[i]
                return (
                    f"waiting for quota: tenant {job.tenant} uses "
                    f"{format_amount(name, usage[i])} of {format_amount(name, limit)} {name}"
                )
        return None

    def charge(self, job: PendingJob) -> None:
        """Count ``job``'s resources as held by its tenant for the rest of the pass."""
        usage = self._usage.setdefault(job.tenant, [0, 0, 0])
        total = job.total
        usage[0] += total.cpu_milli
        usage[1] += total.memory
        usage[2] += total.gpu

    def refund(self, job: PendingJob) -> None:
        """Undo ``charge`` (for preemption or what-if placement later)."""
        usage = self._usage.setdefault(job.tenant, [0, 0, 0])
        total = job.total
        usage[0] -= total.cpu_milli
        usage[1] -= total.memory
        usage[2] -= total.gpu
