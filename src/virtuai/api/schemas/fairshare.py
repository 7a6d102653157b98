from __future__ import annotations

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import ResourcesOut


class DecayedUsageOut(BaseModel):
    cpu_hours: float
    memory_gib_hours: float
    gpu_hours: float


class FairShareOut(BaseModel):
    """One tenant's line, like Slurm's ``sshare``."""

    tenant: str
    weight: float
    norm_shares: float = Field(description="weight / sum of all weights")
    decayed_usage: DecayedUsageOut = Field(description="past usage, decayed by the half-life")
    allocation: ResourcesOut = Field(description="held now")
    usage: float = Field(description="effective dominant share of the cluster, 0..1")
    dominant: str = Field(description="the resource that dominates its usage")
    factor: float = Field(description="2^(-usage/norm_shares): higher goes first")
