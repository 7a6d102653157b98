from __future__ import annotations

from pydantic import BaseModel


class UsageRowOut(BaseModel):
    tenant: str
    user: str
    jobs: int
    tasks: int
    wall_s: float
    cpu_s: float
    gpu_s: float
    memory_gb_s: float
    site: str | None = None


class UsageOut(BaseModel):
    rows: list[UsageRowOut]
    totals: list[UsageRowOut]
    by_site: list[UsageRowOut] = []  # with ?by=site: per tenant and site
