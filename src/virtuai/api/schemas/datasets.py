from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import Name, StrictModel


class DatasetCreate(StrictModel):
    name: Name
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    site: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="the site it is on; none: this platform's nodes (in the tenant's workspace)",
    )
    path: str = Field(min_length=1, max_length=4096, description="an absolute path")


class DatasetCopyOut(BaseModel):
    site: str
    path: str = Field(description="where the copy is on the site (empty until it starts)")
    state: Literal["copying", "ready", "failed"]
    progress: str = Field(description="rsync's last word: percent, bytes, rate")
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class DatasetOut(BaseModel):
    name: str
    tenant: str
    site: str | None = Field(description="none: on this platform's nodes")
    path: str
    created_by: str
    created_at: dt.datetime
    jobs: int = Field(description="unfinished jobs that read it")
    copies: list[DatasetCopyOut]
