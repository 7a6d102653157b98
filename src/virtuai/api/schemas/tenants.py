from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import CpuText, MemoryText, Name, StrictModel


class QuotaIn(StrictModel):
    """Hard limits; omitted or null = unlimited."""

    cpu: CpuText | None = None
    memory: MemoryText | None = None
    gpu: int | None = Field(default=None, ge=0, le=100_000)


class QuotaOut(BaseModel):
    cpu: float | None
    memory: int | None
    gpu: int | None


class TenantCreate(StrictModel):
    name: Name
    quota: QuotaIn = Field(default_factory=QuotaIn)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)


class TenantOut(BaseModel):
    name: str
    quota: QuotaOut
    usage: QuotaOut = Field(description="what the tenant's admitted, unfinished jobs hold now")
    weight: float
    role: str | None = Field(default=None, description="the caller's role in this tenant")
    created_at: dt.datetime
