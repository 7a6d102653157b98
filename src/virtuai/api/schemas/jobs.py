from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from virtuai.api.schemas.common import (
    CpuText,
    DurationText,
    MemoryText,
    Name,
    ResourcesOut,
    StrictModel,
)

MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_ENTRIES = 256
# The environment as a whole: Linux refuses an exec whose strings pass ~2 MiB, and a job's
# row is read on every scheduler pass.
MAX_ENV_BYTES = 128 * 1024
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]


class ResourcesIn(StrictModel):
    """Per task."""

    cpu: CpuText = 1
    memory: MemoryText = "1Gi"
    gpu: int = Field(default=0, ge=0, le=64)


class JobCreate(StrictModel):
    type: Literal["job"] = "job"
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    name: Name | None = None
    command: list[str] = Field(min_length=1, max_length=4096)
    resources: ResourcesIn | None = Field(
        default=None, description="per task; default 1 CPU and 1Gi, in a virtual cluster a node"
    )
    tasks: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="gang size (all or nothing); default 1, in a virtual cluster one per node",
    )
    time: DurationText = Field(default="1h", description="walltime limit")
    priority: str = Field(default="normal", max_length=32)
    env: dict[EnvName, Annotated[str, Field(max_length=32 * 1024)]] = Field(default_factory=dict)
    workdir: str | None = Field(default=None, max_length=4096)
    array: str | None = Field(
        default=None, max_length=256, description="Slurm syntax: 0-99, 1,3,5-7, 0-15:4, %N"
    )
    environment: Name | None = Field(
        default=None, description="a ready Python environment of the tenant (`virtuai env`)"
    )
    image: Name | None = Field(
        default=None,
        description="run in a sandbox over this image's root (`virtuai image list`)",
    )
    dependency: str | None = Field(
        default=None,
        max_length=16_384,
        description="Slurm's syntax: after:ID[+MIN], afterok:ID[:ID...], afterany:ID, "
        "afternotok:ID, singleton; joined by ',' (all of) or '?' (any of)",
    )
    signal: str | None = Field(
        default=None,
        max_length=32,
        description="checkpoint signal on preemption and its grace: SIG@SECONDS (USR1@60)",
    )
    requeue: bool = Field(default=True, description="requeue after preemption (else: preempted)")
    vc: Name | None = Field(
        default=None, description="run in this virtual cluster of the tenant, on its nodes"
    )
    node_class: Literal["light", "fat", "gpu"] | None = Field(
        default=None, description="run only on nodes of this class"
    )
    constraints: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description="node labels the job needs: key=value, or a bare label name (Slurm's "
        "--constraint)",
    )
    site: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="run on this site (a Slurm cluster), or 'any' to let the platform choose",
    )
    data: Name | None = Field(
        default=None, description="a dataset of the tenant: the job runs only where it is"
    )
    stage: bool = Field(
        default=False,
        description="with data: copy it to the site the job runs at (rsync) before it starts",
    )

    @field_validator("command")
    @classmethod
    def _command_size(cls, command: list[str]) -> list[str]:
        if sum(len(part.encode()) + 1 for part in command) > MAX_COMMAND_BYTES:
            raise ValueError("the command is longer than 64 KiB")
        if not command[0]:
            raise ValueError("the command's program must not be empty")
        if any("\x00" in part for part in command):
            raise ValueError("the command must not contain NUL bytes")
        return command

    @field_validator("env")
    @classmethod
    def _env_size(cls, env: dict[str, str]) -> dict[str, str]:
        if len(env) > MAX_ENV_ENTRIES:
            raise ValueError(f"at most {MAX_ENV_ENTRIES} environment entries")
        if sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items()) > MAX_ENV_BYTES:
            raise ValueError("the environment is larger than 128 KiB")
        if any("\x00" in v for v in env.values()):
            raise ValueError("environment values must not contain NUL bytes")
        return env

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, workdir: str | None) -> str | None:
        if workdir is not None and not workdir.startswith("/"):
            raise ValueError("workdir must be an absolute path")
        if workdir is not None and "\x00" in workdir:
            raise ValueError("workdir must not contain NUL bytes")
        return workdir


class PlacementOut(BaseModel):
    index: int
    node: str
    gpu_indices: list[int]


class JobOut(BaseModel):
    id: int
    name: str
    tenant: str
    user: str
    state: str
    reason: str
    exit_code: int | None
    command: list[str]
    resources: ResourcesOut = Field(description="per task")
    tasks: int
    time_limit: int = Field(description="seconds")
    priority: str
    restart_count: int
    requeue: bool
    array_id: int | None
    array_index: int | None
    vc: str | None = Field(description="the virtual cluster it runs in")
    environment: str | None = Field(default=None, description="the Python environment it runs in")
    image: str | None = Field(default=None, description="the image whose root it runs over")
    node_class: str | None = Field(default=None, description="the node class it targets")
    constraints: list[str] = Field(default_factory=list, description="node labels it needs")
    dependency: str = Field(description="as given, normalised; empty when none")
    queue_position: int | None
    expected_start: dt.datetime | None = Field(description="pending jobs: the scheduler's estimate")
    placement: list[PlacementOut]
    submitted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    pool: str | None = Field(default=None, description="the pool it asked for; none: local")
    site: str | None = Field(default=None, description="the site it runs on; none: local")
    data: str | None = Field(default=None, description="the dataset it reads")
    stage: bool = Field(default=False, description="its data is copied where it runs")
    kind: str = Field(default="job", description="job | notebook")


class EventOut(BaseModel):
    """A state change of a job or a virtual cluster; read straight from its table row."""

    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    from_state: str | None
    to_state: str
    reason: str
    actor: str


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    index: int
    node: str
    outcome: str | None
    exit_code: int | None
    message: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobDetailOut(JobOut):
    env: dict[str, str]
    workdir: str | None
    events: list[EventOut]
    task_runs: list[TaskOut] = Field(description="every task of every attempt")


class LogChunkOut(BaseModel):
    data: str
    offset: int = Field(description="offset to ask for next")
    eof: bool = Field(description="the task has ended and everything was read")


class SiteCandidateOut(BaseModel):
    site: str = Field(description="a site, or 'local' for this platform's nodes")
    feasible: bool
    why: str = Field(description="why it could never run there, or when it would start")
    expected_wait_s: int | None


class PlanOut(BaseModel):
    """What would happen to a job submitted now (nothing is recorded)."""

    can_ever_run: bool
    starts_now: bool
    reason: str | None = Field(description="why it would wait, or why it can never run")
    kind: str | None = Field(description="quota, capacity, queue, preemption or never")
    queue_position: int | None
    expected_start: dt.datetime | None
    placement: list[PlacementOut]
    preempts: int = Field(description="running jobs it would preempt before it starts")
    site: str | None = Field(default=None, description="the site it would run at; none: here")
    site_reason: str = Field(default="", description="why there")
    candidates: list[SiteCandidateOut] = Field(
        default_factory=list, description="with --site any: every place weighed"
    )


MAX_BULK_JOBS = 1000


class JobBatchCreate(StrictModel):
    """Many jobs in one request and one transaction: all are recorded, or none."""

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BULK_JOBS)
