"""Shared field types and limits of the API schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from virtuai.domain.tenancy import NAME_MAX

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="DNS label: lower-case letters, digits and '-'",
    ),
]
# Quantities are accepted as users type them ("4Gi", "500m", "2h") or as plain numbers.
MemoryText = Annotated[str | int, Field(description="bytes, or 512Mi, 4Gi, 4G", examples=["4Gi"])]
CpuText = Annotated[str | int | float, Field(description="CPUs: 2, 0.5 or 500m", examples=[2])]
DurationText = Annotated[
    str | int,
    Field(description="seconds, Slurm's MM, MM:SS, HH:MM:SS, D-HH:MM:SS, or 90s/30m/2h"),
]


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    code: str
    message: str
    field: str | None = None


class ResourcesOut(BaseModel):
    cpu: float = Field(description="CPUs")
    memory: int = Field(description="bytes")
    gpu: int
