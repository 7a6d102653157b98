from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from virtuai.api.schemas.common import ResourcesOut


class GpuOut(BaseModel):
    index: int
    model: str
    memory: int
    busy: bool


class NodeOut(BaseModel):
    name: str
    site: str
    pool: str
    capacity: ResourcesOut
    allocated: ResourcesOut
    gpus: list[GpuOut]
    updated_at: dt.datetime
