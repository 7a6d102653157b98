from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import Name, StrictModel

MAX_REQUIREMENTS = 256 * 1024  # a requirements file or a pyproject.toml


class EnvironmentCreate(StrictModel):
    name: Name
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    requirements: str | None = Field(
        default=None, max_length=MAX_REQUIREMENTS, description="a pip requirements file's text"
    )
    pyproject: str | None = Field(
        default=None,
        max_length=MAX_REQUIREMENTS,
        description="a pyproject.toml's text: its [project] dependencies are installed",
    )
    python: str | None = Field(
        default=None, max_length=8, description="Python version (3.11); default: the server's"
    )
    image: Name | None = Field(
        default=None,
        description="build with this image's Python, for jobs over the image (submit --image)",
    )


class EnvironmentOut(BaseModel):
    name: str
    tenant: str
    kind: Literal["pip", "pyproject", "python"]
    state: Literal["building", "ready", "failed"]
    reason: str
    python: str
    image: str | None = Field(default=None, description="built for jobs over this image")
    digest: str = Field(description="SHA-256 of the inputs; names the build, shared by equals")
    path: str
    requirements: str
    created_by: str
    created_at: dt.datetime
    ready_at: dt.datetime | None


class EnvironmentLogOut(BaseModel):
    data: str
    offset: int
    state: Literal["building", "ready", "failed"]
