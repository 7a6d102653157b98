from __future__ import annotations

from pydantic import BaseModel, Field


class LeakedObjectOut(BaseModel):
    kind: str = Field(description="cgroup, mount, netns, veth, bridge, nft, dir")
    name: str
    vc: str | None = Field(description="the runtime id or tag of the cluster it belonged to")


class DoctorOut(BaseModel):
    virtual_clusters: bool = Field(description="this server can run virtual clusters")
    problem: str | None
    leaked: list[LeakedObjectOut] = Field(description="left behind: belong to no known cluster")
    removed: list[LeakedObjectOut]
    errors: list[str]
    services_isolated: bool = Field(
        default=False, description="services' replicas are reachable through the server only"
    )
    services_problem: str | None = Field(default=None, description="why they are not")
