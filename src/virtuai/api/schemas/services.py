"""Schemas of ``/api/v1/services`` (``type: service`` in ``virtuai apply -f``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from virtuai.api.schemas.common import DurationText, Name, ResourcesOut, StrictModel
from virtuai.api.schemas.jobs import EnvName, ResourcesIn

MAX_REPLICAS = 100


class ReplicasIn(StrictModel):
    min: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="0: scale to zero when idle")
    max: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    target_rps: float | None = Field(
        default=None, gt=0, description="requests per second one replica should take"
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplicasIn:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self


class ReadinessIn(StrictModel):
    path: str = Field(
        default="/", max_length=1024, pattern=r"^/[^\s#]*$", description="GET on the port"
    )
    interval: DurationText = Field(default=2, description="between probes")
    timeout: DurationText = Field(default=1, description="of one probe")
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="failures in a row that restart a ready replica"
    )
    start_timeout: DurationText = Field(
        default="5m", description="a replica not ready this long after it started is restarted"
    )


class ServiceApply(StrictModel):
    type: Literal["service"] = "service"
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    name: Name
    command: list[Annotated[str, Field(max_length=32 * 1024)]] = Field(
        min_length=1, max_length=4096, description="listens on $HOST:$PORT"
    )
    port: Literal["auto"] | Annotated[int, Field(gt=1024, lt=65536)] | None = Field(
        default=None,
        description="`auto` (the default, preferred): each replica is given its port in $PORT, "
        "so replicas share machines; a number N (1024 < N < 65536): $PORT is N for every "
        "replica, and at most one replica of anything holds N on a node",
    )
    env: dict[EnvName, Annotated[str, Field(max_length=32 * 1024)]] = Field(default_factory=dict)
    environment: Name | None = Field(
        default=None, description="a ready Python environment of the tenant (`virtuai env`)"
    )
    resources: ResourcesIn | None = Field(default=None, description="per replica; 1 CPU, 1Gi")
    replicas: ReplicasIn = Field(
        default_factory=ReplicasIn, description="a number, or {min, max, target_rps}"
    )
    readiness: ReadinessIn | None = None
    auth: Literal["tenant", "public"] = Field(
        default="tenant", description="tenant: its members only; public: anyone"
    )
    idle_timeout: DurationText | None = Field(
        default=None, description="with replicas.min 0: idle this long, scale to zero"
    )
    time: DurationText | None = Field(
        default=None, description="a replica's time limit; default the longest allowed"
    )
    priority: str | None = Field(default=None, max_length=32)

    @field_validator("command")
    @classmethod
    def _program(cls, command: list[str]) -> list[str]:
        # As a job's: an empty program cannot start (the fuzzer's service of [""] was 201).
        if not command[0].strip():
            raise ValueError("the command's program must not be empty")
        return command

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: object) -> object:
        """``replicas: 3`` is ``{min: 3, max: 3}``."""
        if isinstance(value, bool) or not isinstance(value, int):
            return value
        if not 1 <= value <= MAX_REPLICAS:
            raise ValueError(f"a number from 1 to {MAX_REPLICAS}, or {{min, max, target_rps}}")
        return {"min": value, "max": value}

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: object) -> object:
        """One message for both kinds (else pydantic names the union's branch that failed
        last: ``port.literal['auto']: Input should be 'auto'`` for ``port: 80``)."""
        if value is None or value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 1024 < value < 65536:
            return value
        raise ValueError(f"{value!r}: give `auto` (the default) or a number from 1025 to 65535")


class ReplicaOut(BaseModel):
    job_id: int
    generation: int
    state: str = Field(description="the job's state")
    reason: str = Field(description="the job's reason (what a pending replica waits for)")
    ready: bool
    draining: bool
    probe: str = Field(description="the last readiness probe")
    probe_failures: int
    node: str | None
    started_at: dt.datetime | None
    ready_at: dt.datetime | None


class ServiceEventOut(BaseModel):
    at: dt.datetime
    message: str


class ServiceOut(BaseModel):
    name: str
    tenant: str
    user: str = Field(description="who applied it last: replicas run as them")
    state: str = Field(description="active or deleting")
    reason: str
    path: str = Field(description="where the proxy serves it: /svc/<tenant>/<name>/")
    url: str
    auth: str
    command: list[str]
    resources: ResourcesOut
    environment: str | None
    generation: int
    replicas_min: int
    replicas_max: int
    target_rps: float | None
    desired: int
    ready: int
    readiness_path: str
    idle_timeout: int
    last_request_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    replicas: list[ReplicaOut]
    events: list[ServiceEventOut] = Field(
        default_factory=list,
        description="what happened to it lately (replicas started, ready, restarted, "
        "drained, ended; the wanted count; specs applied), oldest first",
    )
    spec: dict[str, object] = Field(
        default_factory=dict,
        description="the document as `apply -f` takes it: edit and apply it again",
    )
    created: bool = False
    rolled: bool = False
