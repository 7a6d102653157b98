from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, field_validator

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

    @field_validator("from_tar", "from_dir")
    @classmethod
    def _no_nul(cls, path: str | None) -> str | None:
        if path is not None and "\x00" in path:
            raise ValueError("a path must not contain NUL bytes")
        return path
