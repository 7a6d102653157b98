"""The runtime's configuration (what settings.py will map onto)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    state_dir: Path  # images, clusters' layers and records (0700 root)
    prefix: str = "vai"  # 1-3 characters, in every kernel object's name
    cgroup_parent: str = "virtuai-vcs"  # nodes' cgroups go below it
    user_prefix: str = "vai-"  # tenants' Unix users, named as the local driver names them
    node_pids_max: int = 4096  # pids limit of each node
    workers: int = 8  # threads for per-node steps that wait on processes
