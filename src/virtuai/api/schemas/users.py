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
    is_admin: bool = Field(description="shown to administrators and to the user itself only")
    source: str
    tenants: list[MembershipOut] = Field(description="only tenants the caller can see")
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None


class UserCreated(BaseModel):
    user: UserOut
    token: str = Field(description="shown once; only its hash is stored")


class MembershipSet(StrictModel):
    tenant: Name
    role: RoleText = "member"


class TokenCreated(BaseModel):
    token: str


class UserTokenCreate(StrictModel):
    """Nothing to give (an empty object, or no body): the token is named for who issued it
    and does not expire.  A field sent here (``expires``) is refused, not silently ignored."""


class TokenCreate(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    expires: str | None = Field(
        default=None, max_length=32, description="lifetime: 30d, 12h, 90m; null = never"
    )


class TokenIssued(BaseModel):
    id: int
    name: str | None
    token: str = Field(description="shown once; only its hash is stored")
    created_at: dt.datetime
    expires_at: dt.datetime | None


class TokenOut(BaseModel):
    id: int
    name: str | None
    user: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None = Field(description="to the minute")
    revoked_at: dt.datetime | None
