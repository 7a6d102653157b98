from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.usage import UsageOut, UsageRowOut
from virtuai.errors import InvalidRequest
from virtuai.services.usage import UsageTotals, usage_by_site, usage_report
from virtuai.store.db import transaction

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])


def parse_since(text: str | None) -> dt.datetime | None:
    """``2026-11-01`` or an ISO datetime; naive values are UTC."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"since: cannot read {text!r} as a date; use YYYY-MM-DD or an ISO 8601 time",
            field="since",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _to_api(totals: UsageTotals) -> UsageRowOut:
    return UsageRowOut(
        tenant=totals.tenant,
        user=totals.user,
        jobs=totals.jobs,
        tasks=totals.tasks,
        wall_s=totals.wall_s,
        cpu_s=totals.cpu_s,
        gpu_s=totals.gpu_s,
        memory_gb_s=totals.memory_gb_s,
        site=totals.site,
    )


@router.get("")
def usage(
    caller: CallerDep,
    context: Context,
    tenant: str | None = None,
    since: str | None = None,
    by: str | None = None,
) -> UsageOut:
    if by not in (None, "site"):
        raise InvalidRequest(f"by: {by!r} is not known; use 'site'", field="by")
    with transaction(context.sessions) as session:
        rows, totals = usage_report(session, caller, tenant, parse_since(since))
        sites = usage_by_site(session, caller, tenant, parse_since(since)) if by == "site" else []
    return UsageOut(
        rows=[_to_api(r) for r in rows],
        totals=[_to_api(t) for t in totals],
        by_site=[_to_api(s) for s in sites],
    )
