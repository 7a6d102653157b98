from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import DurationText, Name, ResourcesOut, StrictModel
from virtuai.api.schemas.jobs import ResourcesIn


class NotebookCreate(StrictModel):
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    name: Name | None = Field(default=None, description="default: lab")
    resources: ResourcesIn | None = Field(default=None, description="default 1 CPU and 1Gi")
    time: DurationText | None = Field(
        default=None, description="time limit; default the server's (8h)"
    )
    priority: str = Field(default="normal", max_length=32)
    environment: Name | None = Field(
        default=None,
        description="a ready environment of the tenant with JupyterLab; default: the "
        "server's notebook Python, or the tenant's environment `notebook` built on first use",
    )
    vc: Name | None = Field(default=None, description="not offered: notebooks run on nodes")


class NotebookOut(BaseModel):
    id: int = Field(description="its job's id (`virtuai job ID`)")
    name: str
    tenant: str
    user: str
    state: str
    reason: str
    path: str = Field(description="where the proxy serves it: /user/<user>/<name>/")
    url: str = Field(description="the path on the server that answered")
    resources: ResourcesOut
    time_limit: int = Field(description="seconds")
    environment: str | None
    idle_timeout: int = Field(description="seconds without activity before it is stopped")
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_activity_at: dt.datetime | None = Field(
        default=None,
        description="its last activity as the idle culler counts it (Jupyter's own, a busy "
        "kernel, a request through the proxy), recorded by its machine's server every "
        "notebooks.cull_interval_s",
    )
