from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import CpuText, DurationText, MemoryText, Name, StrictModel

PoolName = Field(
    default="*",
    max_length=63,
    # A site's pool is <site>:<partition> (Slurm's partition names allow more).
    pattern=r"^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?(:[A-Za-z0-9_.-]{1,63})?)$",
    description="a pool of nodes (a site's: site:partition), or * for all pools together",
)


class LimitsIn(StrictModel):
    """Per-resource limits; omitted or null = unlimited."""

    cpu: CpuText | None = None
    memory: MemoryText | None = None
    gpu: int | None = Field(default=None, ge=0, le=100_000)


class QuotaIn(LimitsIn):
    """A tenant's quota in one pool: nominal (cpu, memory, gpu), borrowing and lending limits."""

    pool: str = PoolName
    borrowing: LimitsIn | None = Field(
        default=None, description="how much more than nominal it may borrow (default: no limit)"
    )
    lending: LimitsIn | None = Field(
        default=None, description="how much of its unused nominal it lends (default: all)"
    )


class LimitsOut(BaseModel):
    cpu: float | None
    memory: int | None
    gpu: int | None


class PoolQuotaOut(BaseModel):
    pool: str
    nominal: LimitsOut
    borrowing_limit: LimitsOut
    lending_limit: LimitsOut
    used: LimitsOut
    borrowed: LimitsOut = Field(description="used above nominal, from the cohort")
    lent: LimitsOut = Field(description="share of the cohort's borrowing this tenant provides")


class TenantCreate(StrictModel):
    name: Name
    quota: LimitsIn = Field(default_factory=LimitsIn)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    cohort: Name | None = None


class TenantUpdate(StrictModel):
    weight: float | None = Field(default=None, gt=0, le=1_000_000)
    cohort: Name | None = None
    leave_cohort: bool = False
    notebook_idle_timeout: DurationText | None = Field(
        default=None, description="stop its notebooks after this long idle (e.g. 30m)"
    )


class TenantOut(BaseModel):
    name: str
    quota: LimitsOut = Field(description="the tenant-wide nominal quota (pool *)")
    usage: LimitsOut = Field(description="what the tenant's admitted, unfinished jobs hold now")
    quotas: list[PoolQuotaOut]
    weight: float
    cohort: str | None
    role: str | None = Field(default=None, description="the caller's role in this tenant")
    created_at: dt.datetime
    disabled_at: dt.datetime | None = Field(default=None, description="set: no new work")
    notebook_idle_timeout: int | None = Field(
        default=None, description="seconds; none: the server's default (notebooks.idle_timeout_s)"
    )
