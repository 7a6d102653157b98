"""Job dependencies, as Slurm writes them: ``afterok:12:13,afterany:14``.

A dependency on an array's id means every element of the array.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtuai.domain.workload import JobState
from virtuai.errors import InvalidRequest

MAX_DEPENDENCIES = 1000
# Only ASCII digits: "afterok:" + ARABIC-INDIC DIGIT ONE must not become a dependency on job 1.
_PART_RE = re.compile(r"^(afterok|afterany|afternotok)((?::\d{1,10})+)$", re.ASCII)
MAX_JOB_ID = 2**31 - 1  # jobs.id is a 32-bit INTEGER on PostgreSQL


class DependencyKind(enum.StrEnum):
    AFTER_OK = "afterok"  # start after the jobs succeeded
    AFTER_ANY = "afterany"  # start after the jobs ended, however
    AFTER_NOT_OK = "afternotok"  # start after the jobs ended without success


@dataclass(frozen=True, slots=True)
class Dependency:
    kind: DependencyKind
    job_id: int

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind.value, "job_id": self.job_id}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Dependency:
        return cls(DependencyKind(str(data["kind"])), int(str(data["job_id"])))


def parse_dependencies(text: str, *, field: str = "dependency") -> tuple[Dependency, ...]:
    """``afterok:1:2,afterany:3`` -> one ``Dependency`` per (kind, job)."""
    found: list[Dependency] = []
    for part in text.replace(" ", "").split(","):
        match = _PART_RE.match(part)
        if not match:
            raise InvalidRequest(
                f"{field}: cannot read {part!r}; use afterok:ID[:ID...], afterany:ID or "
                "afternotok:ID, separated by commas",
                field=field,
            )
        kind = DependencyKind(match.group(1))
        ids = [int(i) for i in match.group(2).strip(":").split(":")]
        if any(i > MAX_JOB_ID for i in ids):
            raise InvalidRequest(f"{field}: job ids go up to {MAX_JOB_ID}", field=field)
        found.extend(Dependency(kind, i) for i in ids)
    if len(found) > MAX_DEPENDENCIES:
        raise InvalidRequest(f"{field}: at most {MAX_DEPENDENCIES} dependencies", field=field)
    return tuple(dict.fromkeys(found))


def format_dependencies(dependencies: Sequence[Dependency]) -> str:
    by_kind: dict[DependencyKind, list[str]] = {}
    for dep in dependencies:
        by_kind.setdefault(dep.kind, []).append(str(dep.job_id))
    return ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in by_kind.items())


@dataclass(frozen=True, slots=True)
class DependencyStatus:
    ready: bool
    # Set when the dependency can never be met (e.g. afterok on a job that failed).
    never: str | None = None
    waiting_for: str = ""


def evaluate(
    dependencies: Sequence[Dependency], states: Mapping[int, Sequence[JobState]]
) -> DependencyStatus:
    """Whether a job may be scheduled, given the states of the jobs it depends on.

    ``states`` maps each depended-on id to the states of its jobs (one job, or
    every element of an array).  Missing ids count as never satisfiable.
    """
    waiting: list[str] = []
    for dep in dependencies:
        dep_states = states.get(dep.job_id)
        if not dep_states:
            return DependencyStatus(False, never=f"job {dep.job_id} does not exist")
        if not all(s.is_finished() for s in dep_states):
            waiting.append(f"job {dep.job_id} ({dep.kind})")
            continue
        succeeded = all(s is JobState.SUCCEEDED for s in dep_states)
        if dep.kind is DependencyKind.AFTER_OK and not succeeded:
            return DependencyStatus(False, never=f"job {dep.job_id} did not succeed (afterok)")
        if dep.kind is DependencyKind.AFTER_NOT_OK and succeeded:
            return DependencyStatus(False, never=f"job {dep.job_id} succeeded (afternotok)")
    if waiting:
        return DependencyStatus(False, waiting_for=", ".join(waiting))
    return DependencyStatus(True)
