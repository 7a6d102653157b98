from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, field_validator

from virtuai.api.schemas.common import CpuText, MemoryText, Name, ResourcesOut, StrictModel
from virtuai.api.schemas.jobs import EventOut

MAX_NODES = 253  # a /24 holds 253 nodes (the gateway takes .1)


class NodeResourcesIn(StrictModel):
    """Per node."""

    cpu: CpuText = 1
    memory: MemoryText = "1Gi"
    gpu: int = Field(default=0, ge=0, le=64)


class VcCreate(StrictModel):
    name: Name = Field(description="DNS label; node i is <name>-<i>")
    tenant: Name | None = Field(default=None, description="default: the caller's only tenant")
    nodes: int = Field(ge=1, le=MAX_NODES)
    resources: NodeResourcesIn = Field(default_factory=NodeResourcesIn)
    image: Name = Field(default="host", description="root file system of every node")
    gateway: bool = Field(default=False, description="outbound NAT; otherwise no route out")


class VcNodeOut(BaseModel):
    index: int
    hostname: str
    address: str
    state: str = Field(description="running, degraded, dead, stopped; pending before it is built")
    host: str | None = Field(description="the physical node it is placed on")
    gpu_indices: list[int]
    problems: list[str]


class VcOut(BaseModel):
    id: int
    name: str
    tenant: str
    user: str
    state: str
    reason: str
    node_count: int
    resources: ResourcesOut = Field(description="per node")
    image: str
    gateway: bool
    subnet: str
    queue_position: int | None
    nodes: list[VcNodeOut]
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None
    observed_at: dt.datetime | None = Field(description="when the nodes were last looked at")


class VcDetailOut(VcOut):
    events: list[EventOut]


class VcExec(StrictModel):
    command: list[str] = Field(min_length=1, max_length=4096)
    node: int = Field(default=0, ge=0, le=MAX_NODES)
    timeout: int | None = Field(
        default=None, ge=1, le=7 * 86400, description="seconds; default the server's"
    )
    stdin: str | None = Field(default=None, max_length=1024 * 1024)

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str]) -> list[str]:
        return check_command(command)


class VcExecStart(StrictModel):
    """The first message of ``/api/v1/vcs/{name}/exec/ws`` (see ``virtuai.execwire``)."""

    command: list[str] = Field(min_length=1, max_length=4096)
    timeout: int | None = Field(
        default=None, ge=1, le=7 * 86400, description="seconds; default the server's"
    )
    stdin: bool = Field(default=False, description="the client sends standard input")
    tty: bool = Field(default=False, description="run on a pseudo-terminal")
    rows: int = Field(default=24, ge=1, le=10_000)
    cols: int = Field(default=80, ge=1, le=10_000)
    term: str = Field(default="xterm", pattern=r"^[A-Za-z0-9._+-]{1,64}$")

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str]) -> list[str]:
        return check_command(command)


def check_command(command: list[str]) -> list[str]:
    if not command[0] or any("\x00" in part for part in command):
        raise ValueError("the command's program must not be empty or contain NUL bytes")
    return command
