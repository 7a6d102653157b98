"""Python environments, the pure part: where a build goes and what names it.

A build is named by the SHA-256 of its inputs, so equal inputs share one build.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # as the local driver
ENVS_SUBDIR = ".virtuai/envs"  # inside the tenant's workspace
READY_MARKER = ".virtuai-ready"  # written last by a build: its absence means "not built"


@dataclass(frozen=True, slots=True)
class EnvOptions:
    """Where builds go and where their logs are kept (the server's, never the tenant's)."""

    workspaces_dir: Path
    logs_dir: Path
    default_python: str = field(default=f"{sys.version_info.major}.{sys.version_info.minor}")

    def build_dir(self, tenant: str, digest: str) -> Path:
        return self.workspaces_dir / tenant / ENVS_SUBDIR / digest

    def log_path(self, env_id: int) -> Path:
        return self.logs_dir / f"{env_id}.log"


def input_digest(requirements: str, python: str, image: str | None = None) -> str:
    """The name of a build: equal inputs, equal digest (line endings and blank lines aside).
    ``image``: built with that image's Python, for jobs over it (``None``: the host's)."""
    lines = [line.rstrip() for line in requirements.splitlines() if line.strip()]
    inputs: dict[str, object] = {"python": python, "requirements": lines}
    if image is not None:  # absent, not null, so host builds keep their digests
        inputs["image"] = image
    blob = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
