"""What a batch script resolves to: the ``Resolution``, its directives and problems.

Plain data with its JSON form (what ``virtuai sbatch --test-only --json``
prints); ``resolve`` computes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from virtuai.slurmfront import values as v

DEFAULT_MEM_PER_CPU = 2**30  # virtuai's default when no memory is asked for: 1 GiB per CPU
DEFAULT_TIME_S = 3600  # virtuai's default time limit (Slurm's is the partition's)
UNLIMITED_CAP_S = 365 * 86400
MEMORY_OPTIONS = ("mem", "mem-per-cpu", "mem-per-gpu")
_NAME_BAD_RE = re.compile(r"[^a-z0-9-]+")


class Fate:
    USED = "used"
    OVERRIDDEN = "overridden"
    ACCEPTED = "accepted"  # accepted, no effect (with a note)
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    IGNORED = "ignored"  # after the first command, as Slurm ignores it
    COMMENT = "comment"  # ##SBATCH and friends


@dataclass(slots=True)
class Directive:
    line: int | None
    text: str
    origin: str
    option: str | None
    value: str | None
    fate: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "text": self.text,
            "origin": self.origin,
            "option": self.option,
            "value": self.value,
            "fate": self.fate,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """Something virtuai cannot honour: ``kind`` is unknown, unsupported or invalid."""

    kind: str
    reason: str
    line: int | None = None
    origin: str = "script"

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else f"{self.origin}: " if self.origin else ""
        return where + self.reason


@dataclass(frozen=True, slots=True)
class Context:
    """What the resolution needs from outside: given by the CLI, never read here."""

    script_name: str  # "train.sh"; "wrap" for --wrap
    submit_dir: str
    user: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Resolution:
    name: str = ""
    nodes: int = 1
    nodes_max: int = 1
    ntasks: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_per_node: int = 0
    mem_default: bool = True
    mem_whole_node: bool = False
    gpus: int = 0
    gpus_per_node: int = 0
    gpus_per_task: int | None = None  # --gpus-per-task: each srun rank sees its own GPUs
    gpu_type: str | None = None
    time_limit_s: int | None = DEFAULT_TIME_S
    time_default: bool = True
    time_min_s: int | None = None
    array: list[int] | None = None
    array_max_running: int | None = None
    dependencies: list[v.DepTerm] = field(default_factory=list)
    dependency_any: bool = False
    kill_on_invalid_dep: bool = False
    output: str = ""
    error: str = ""
    output_pattern: str = ""  # as given (relative to the working directory)
    error_pattern: str = ""
    open_mode: str = "truncate"
    workdir: str = ""
    workdir_given: bool = False
    partitions: list[str] = field(default_factory=list)
    # Set when a server says the partition names one of its sites rather than a pool.
    site: str | None = None
    tenant: str | None = None
    qos: str | None = None
    constraints: list[str] = field(default_factory=list)
    exclusive: bool = False
    requeue: bool = True
    signal: v.SignalSpec | None = None
    export: v.ExportSpec = field(default_factory=lambda: v.ExportSpec(True, (), ()))
    wrap: str | None = None
    parsable: bool = False
    wait: bool = False
    test_only: bool = False
    interpreter: str = ""
    directives: list[Directive] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    script_args: list[str] = field(default_factory=list)

    @property
    def api_name(self) -> str:
        """The job name as a virtuai name (a DNS label), from Slurm's free-form one."""
        name = _NAME_BAD_RE.sub("-", self.name.lower()).strip("-")[:63].strip("-")
        return name or "sbatch"

    @property
    def cpus_per_node(self) -> int:
        return self.cpus_per_task * self.ntasks_per_node

    @property
    def priority(self) -> str:
        return self.qos or "normal"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "ntasks": self.ntasks,
            "ntasks_per_node": self.ntasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "cpus_per_node": self.cpus_per_node,
            "mem_per_node": self.mem_per_node,
            "mem_default": self.mem_default,
            "gpus": self.gpus,
            "gpus_per_node": self.gpus_per_node,
            "gpus_per_task": self.gpus_per_task,
            "gpu_type": self.gpu_type,
            "time_limit_s": self.time_limit_s,
            "time_default": self.time_default,
            "time_min_s": self.time_min_s,
            "array": self.array,
            "array_max_running": self.array_max_running,
            "dependencies": [t.to_json() for t in self.dependencies],
            "dependency_mode": "any" if self.dependency_any else "all",
            "kill_on_invalid_dep": self.kill_on_invalid_dep,
            "output": self.output,
            "error": self.error,
            "open_mode": self.open_mode,
            "workdir": self.workdir,
            "pool": self.partitions[0] if len(self.partitions) == 1 and not self.site else None,
            "site": self.site,
            "partitions": self.partitions,
            "tenant": self.tenant,
            "qos": self.qos,
            "priority": self.priority,
            "constraints": self.constraints,
            "exclusive": self.exclusive,
            "requeue": self.requeue,
            "signal": None
            if self.signal is None
            else {
                "signal": self.signal.signal,
                "seconds": self.signal.seconds,
                "batch_only": self.signal.batch_only,
            },
            "export": {
                "all": self.export.all,
                "names": list(self.export.names),
                "set": [name for name, _ in self.export.values],
            },
            "interpreter": self.interpreter,
            "script_args": self.script_args,
            "directives": [d.to_json() for d in self.directives],
            "notes": self.notes,
        }
