from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from virtuai.api.schemas.common import ResourcesOut, StrictModel


class GpuOut(BaseModel):
    index: int
    model: str
    memory: int
    busy: bool


class NodeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    site: str
    pool: str
    # ``class`` in JSON (a Python keyword here): light | fat | gpu.
    node_class: str = Field(serialization_alias="class")
    labels: dict[str, str]
    capacity: ResourcesOut
    allocated: ResourcesOut
    gpus: list[GpuOut]
    # ready | cordoned | draining | unreachable
    state: str
    heartbeat_age_s: float | None
    leader: bool
    address: str
    updated_at: dt.datetime


class DrainIn(StrictModel):
    requeue: bool = Field(
        default=False, description="requeue running jobs (checkpoint signal, grace) at once"
    )
