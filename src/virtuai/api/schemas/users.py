from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import Name, StrictModel

RoleText = Literal["owner", "member", "viewer"]


class UserCreate(StrictModel):
    name: Name
    tenant: Name | None = None
    role: RoleText = "member"
    admin: bool = False


class MembershipOut(BaseModel):
    tenant: str
    role: str


class UserOut(BaseModel):
    name: str
    is_admin: bool
    source: str
    tenants: list[MembershipOut]
    created_at: dt.datetime


class UserCreated(BaseModel):
    user: UserOut
    token: str = Field(description="shown once; only its hash is stored")


class MembershipSet(StrictModel):
    tenant: Name
    role: RoleText = "member"


class TokenCreated(BaseModel):
    token: str
