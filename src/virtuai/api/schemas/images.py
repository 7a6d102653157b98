from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from virtuai.api.schemas.common import Name, StrictModel


class ImageOut(BaseModel):
    name: str
    builtin: bool
    size_bytes: int
    created_at: dt.datetime | None
    source: str


class ImageImport(StrictModel):
    """Exactly one of ``from_tar`` and ``from_dir``: an absolute path on the server's machine,
    read by the server (as root)."""

    name: Name
    from_tar: str | None = Field(default=None, max_length=4096)
    from_dir: str | None = Field(default=None, max_length=4096)
