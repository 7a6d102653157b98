from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import StrictModel


class SiteCreate(StrictModel):
    """A Slurm site: over SSH (login + identity) or on the server's machine (local)."""

    name: str = Field(max_length=31)
    local: bool = Field(default=False, description="sbatch works where the server runs")
    login: str | None = Field(default=None, max_length=255, description="user@host[:port]")
    identity: str | None = Field(
        default=None, max_length=16_384, description="the private key (stored 0600 by the server)"
    )
    known_hosts: str | None = Field(
        default=None,
        max_length=65_536,
        description="known_hosts lines of the login node; default: the key it offers now",
    )
    partition: str | None = Field(default=None, max_length=63)
    account_map: dict[str, str] = Field(
        default_factory=dict, description="tenant -> Slurm account on this site"
    )
    max_jobs: int | None = Field(default=None, ge=1, le=1_000_000)


class SiteOut(BaseModel):
    name: str
    kind: str
    state: str
    login: str | None
    local: bool
    partition: str | None
    pool: str
    account_map: dict[str, str]
    max_jobs: int | None
    health: str
    message: str
    partitions: list[dict[str, Any]]
    capacity: dict[str, Any]
    queue_depth: int
    expected_wait_s: int | None = Field(
        default=None,
        description="how long a job would wait there now (squeue --start); none: unknown",
    )
    running_jobs: int
    last_seen_at: dt.datetime | None
    unreachable_since: dt.datetime | None
    created_at: dt.datetime
