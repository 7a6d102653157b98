"""The typed record the local driver hands a task's supervisor: ``spec.json``.

The driver writes it before the supervisor starts; the supervisor, and any later server
(``observe``, ``release``, recording a lost task), read it back.  Both sides go through
``SupervisorSpec`` so that a key cannot be misspelt on one side only, and the file says
which version of the record it is: a server upgraded while tasks run still reads the
files its predecessor wrote (version 0 is the untyped dict of before, same keys, no
``version``), and a supervisor never guesses at a record newer than it knows.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtuai.host import files
from virtuai.host.cgroups import Limits

SPEC_VERSION = 1


class RecordError(ValueError):
    """A ``spec.json`` that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TaskUser:
    """The tenant's Unix account the task runs as (the server is root)."""

    uid: int
    gid: int
    name: str


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    key: str
    created_at: float = 0.0
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: TaskUser | None = None
    # ``CgroupLayout.to_json()`` of the tasks' parent cgroup (or of a virtual node's).
    cgroup: Mapping[str, Any] | None = None
    limits: Limits = field(default_factory=Limits)
    walltime_s: int = 0
    kill_grace_s: int = 0
    checkpoint_signal: int = int(signal.SIGTERM)
    checkpoint_grace_s: int = 0
    gpu_indices: tuple[int, ...] = ()
    job_id: str = ""
    tenant: str = ""
    # The virtual node the task enters (``host.sandbox.VirtualNode.to_json()``), if any.
    vnode: Mapping[str, Any] | None = None
    # The image the task runs over (name, root, keepalive, binds), if any.
    image: Mapping[str, Any] | None = None
    version: int = SPEC_VERSION

    def to_json(self) -> dict[str, Any]:
        user = self.user
        return {
            "version": self.version,
            "key": self.key,
            "created_at": self.created_at,
            "command": list(self.command),
            "env": dict(self.env),
            "workdir": self.workdir,
            "user": None if user is None else {"uid": user.uid, "gid": user.gid, "name": user.name},
            "cgroup": None if self.cgroup is None else dict(self.cgroup),
            "limits": {
                "cpu_milli": self.limits.cpu_milli,
                "memory": self.limits.memory,
                "pids": self.limits.pids,
            },
            "walltime_s": self.walltime_s,
            "kill_grace_s": self.kill_grace_s,
            "checkpoint_signal": self.checkpoint_signal,
            "checkpoint_grace_s": self.checkpoint_grace_s,
            "gpu_indices": list(self.gpu_indices),
            "job_id": self.job_id,
            "tenant": self.tenant,
            "vnode": None if self.vnode is None else dict(self.vnode),
            "image": None if self.image is None else dict(self.image),
        }

    @classmethod
    def from_json(cls, data: object) -> SupervisorSpec:
        """Read a record of any version up to ``SPEC_VERSION``; ``RecordError`` if unusable."""
        if not isinstance(data, Mapping):
            raise RecordError("spec.json is not an object")
        try:
            version = int(data.get("version", 0))
            if version > SPEC_VERSION:
                raise RecordError(
                    f"spec.json is version {version}, newer than this supervisor's "
                    f"{SPEC_VERSION}: upgrade the server's installation"
                )
            key = data["key"]
            if not isinstance(key, str) or not key:
                raise RecordError("spec.json has no task key")
            user = data.get("user")
            limits = data.get("limits") or {}
            kill_grace_s = max(0, int(data.get("kill_grace_s") or 0))
            checkpoint_grace = data.get("checkpoint_grace_s")
            return cls(
                key=key,
                created_at=float(data.get("created_at") or 0.0),
                command=tuple(str(c) for c in data.get("command") or ()),
                env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
                workdir=str(data.get("workdir") or "/"),
                user=None
                if not user
                else TaskUser(int(user["uid"]), int(user["gid"]), str(user["name"])),
                cgroup=_mapping(data.get("cgroup")),
                limits=Limits(
                    cpu_milli=int(limits.get("cpu_milli", 0)),
                    memory=int(limits.get("memory", 0)),
                    pids=int(limits.get("pids", 0)),
                ),
                walltime_s=int(data.get("walltime_s") or 0),
                kill_grace_s=kill_grace_s,
                checkpoint_signal=int(data.get("checkpoint_signal") or signal.SIGTERM),
                checkpoint_grace_s=kill_grace_s
                if checkpoint_grace is None
                else max(0, int(checkpoint_grace)),
                gpu_indices=tuple(int(i) for i in data.get("gpu_indices") or ()),
                job_id=str(data.get("job_id") or ""),
                tenant=str(data.get("tenant") or ""),
                vnode=_mapping(data.get("vnode")),
                image=_mapping(data.get("image")),
                version=SPEC_VERSION,
            )
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"spec.json is malformed: {exc!r}") from None


def read_spec(task_dir: Path) -> SupervisorSpec | None:
    """The task's record; ``None`` when missing, unreadable or unusable."""
    data = files.read_json(task_dir / files.SPEC)
    if data is None:
        return None
    try:
        return SupervisorSpec.from_json(data)
    except RecordError:
        return None


def write_spec(task_dir: Path, spec: SupervisorSpec) -> None:
    # Not fsynced: it matters only while the machine is up.  After a power cut its task is
    # gone either way (lost, or launched again with a new spec if its handle was not yet
    # recorded); result.json, the record that outlives the task, is written durably.
    files.write_json_atomic(task_dir / files.SPEC, spec.to_json(), durable=False)


def _mapping(value: object) -> Mapping[str, Any] | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise RecordError(f"expected an object, got {value!r}")
    return dict(value)
