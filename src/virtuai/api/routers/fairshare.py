from __future__ import annotations

from fastapi import APIRouter

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.common import ResourcesOut
from virtuai.api.schemas.fairshare import DecayedUsageOut, FairShareOut
from virtuai.domain.units import MILLI
from virtuai.services.planning import fair_share_rows
from virtuai.store.db import read_transaction

router = APIRouter(prefix="/api/v1/fairshare", tags=["scheduling"])
HOUR = 3600.0
GIB = 2**30


@router.get("")
def fairshare(caller: CallerDep, context: Context) -> list[FairShareOut]:
    with read_transaction(context.sessions) as session:
        rows = fair_share_rows(session, caller, context.rules, context.clock.now())
    return [
        FairShareOut(
            tenant=row.tenant,
            weight=row.weight,
            norm_shares=row.norm_shares,
            decayed_usage=DecayedUsageOut(
                cpu_hours=row.history.cpu_milli_s / MILLI / HOUR,
                memory_gib_hours=row.history.memory_s / GIB / HOUR,
                gpu_hours=row.history.gpu_s / HOUR,
            ),
            allocation=ResourcesOut(
                cpu=row.allocation.cpu_milli / MILLI,
                memory=row.allocation.memory,
                gpu=row.allocation.gpu,
            ),
            usage=row.usage,
            dominant=row.dominant,
            factor=row.factor,
        )
        for row in rows
    ]
