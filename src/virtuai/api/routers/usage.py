from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.usage import UsageOut, UsageRowOut
from virtuai.errors import InvalidRequest
from virtuai.services.usage import UsageTotals, usage_by_site, usage_report
from virtuai.store.db import read_transaction

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])


def parse_since(text: str | None, field: str = "since") -> dt.datetime | None:
    """``2026-11-01`` or an ISO datetime; naive values are UTC."""
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{field}: cannot read {text!r} as a date; use YYYY-MM-DD or an ISO 8601 time",
            field=field,
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
    since: Annotated[str | None, Query(max_length=64, description="from (ISO date)")] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="before (ISO date), exclusive")
    ] = None,
    by: Annotated[str | None, Query(max_length=16, description="also split per 'site'")] = None,
) -> UsageOut:
    """Tasks that ended in [since, until), per tenant and user, and per tenant (and site)."""
    if by not in (None, "site"):
        raise InvalidRequest(f"by: {by!r} is not known; use 'site'", field="by")
    start, end = parse_since(since), parse_since(until, "until")
    with read_transaction(context.sessions) as session:
        rows, totals = usage_report(session, caller, tenant, start, end)
        sites = usage_by_site(session, caller, tenant, start, end) if by == "site" else []
    return UsageOut(
        rows=[_to_api(r) for r in rows],
        totals=[_to_api(t) for t in totals],
        by_site=[_to_api(s) for s in sites],
    )
