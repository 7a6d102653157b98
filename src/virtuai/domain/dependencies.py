"""Job dependencies, as Slurm writes them: ``afterok:12:13,afterany:14``, ``after:7+5``,
``singleton``, or any-of lists ``afterok:1?afternotok:2``.

A dependency on an array's id means every element of the array, ``ID_IDX`` one element
of it; ``aftercorr:ID`` makes each element of an array wait for the element of array
``ID`` with the same index to succeed (met when that array has no such element, as there
is nothing to wait for).  Terms joined by ``,``
must all be met; terms joined by ``?`` are met when any one is (one separator per list,
as Slurm has it).  ``after:ID[+MIN]`` waits until the job started (or ended without
starting) and MIN more minutes passed; ``+MIN`` on the other kinds counts from the end.
``singleton`` waits while another job of the same name and user holds resources, or
waits in the queue ahead of it (Slurm's rule: one running job per name and user, in
submission order).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtuai.domain.workload import JobState
from virtuai.errors import InvalidRequest

MAX_DEPENDENCIES = 1000
MAX_DELAY_MIN = 365 * 24 * 60
# Only ASCII digits: "afterok:" + ARABIC-INDIC DIGIT ONE must not become a dependency on job 1.
_PART_RE = re.compile(
    r"^(after|afterok|afterany|afternotok|aftercorr)"
    r"((?::\d{1,10}(?:_\d{1,10})?(?:\+\d{1,6})?)+)$",
    re.ASCII,
)
_JOB_RE = re.compile(r"^(\d{1,10})(?:_(\d{1,10}))?(?:\+(\d{1,6}))?$", re.ASCII)
MAX_JOB_ID = 2**31 - 1  # jobs.id is a 32-bit INTEGER on PostgreSQL


class DependencyKind(enum.StrEnum):
    AFTER = "after"  # start after the jobs started (or ended without starting)
    AFTER_OK = "afterok"  # start after the jobs succeeded
    AFTER_ANY = "afterany"  # start after the jobs ended, however
    AFTER_NOT_OK = "afternotok"  # start after the jobs ended without success
    AFTER_CORR = "aftercorr"  # each element after the same element of the array succeeded
    SINGLETON = "singleton"  # one running job per name and user


@dataclass(frozen=True, slots=True)
class Dependency:
    kind: DependencyKind
    job_id: int  # 0 for singleton
    delay_min: int = 0  # +MIN: minutes after the start (after) or the end (the others)
    # Set on every term of an any-of ("?") list: it travels with each term so that the
    # stored list (one JSON column) stays a list of terms.
    any_of: bool = False
    index: int | None = None  # ID_IDX: only that element of array ID

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind.value, "job_id": self.job_id}
        if self.delay_min:
            out["delay_min"] = self.delay_min
        if self.any_of:
            out["any"] = True
        if self.index is not None:
            out["index"] = self.index
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Dependency:
        index = data.get("index")
        return cls(
            DependencyKind(str(data["kind"])),
            int(str(data["job_id"])),
            int(str(data.get("delay_min", 0))),
            bool(data.get("any", False)),
            None if index is None else int(str(index)),
        )

    @property
    def target(self) -> str:
        """``12`` or ``12_3``, as Slurm names a job or an element of an array."""
        return f"{self.job_id}" if self.index is None else f"{self.job_id}_{self.index}"

    def text(self) -> str:
        if self.kind is DependencyKind.SINGLETON:
            return "singleton"
        delay = f"+{self.delay_min}" if self.delay_min else ""
        return f"{self.kind}:{self.target}{delay}"


def parse_dependencies(text: str, *, field: str = "dependency") -> tuple[Dependency, ...]:
    """``afterok:1:2,afterany:3`` -> one ``Dependency`` per (kind, job); ``?`` for any-of."""
    raw = text.replace(" ", "")
    if "," in raw and "?" in raw:
        raise InvalidRequest(
            f"{field}: a list uses either ',' (all of) or '?' (any of), not both", field=field
        )
    any_of = "?" in raw
    found: list[Dependency] = []
    for part in raw.split("?" if any_of else ","):
        if part.lower() == "singleton":
            found.append(Dependency(DependencyKind.SINGLETON, 0, any_of=any_of))
            continue
        match = _PART_RE.match(part)
        if not match:
            raise InvalidRequest(
                f"{field}: cannot read {part!r}; use after:ID[+MIN], afterok:ID[:ID...], "
                "afterany:ID, afternotok:ID, aftercorr:ID or singleton (ID_IDX: one element "
                "of array ID), separated by ',' (all of) or '?' (any of)",
                field=field,
            )
        kind = DependencyKind(match.group(1))
        for item in match.group(2).strip(":").split(":"):
            job = _JOB_RE.match(item)
            assert job is not None  # the part's pattern admits only these
            job_id, delay = int(job.group(1)), int(job.group(3) or 0)
            index = None if job.group(2) is None else int(job.group(2))
            if kind is DependencyKind.AFTER_CORR and (index is not None or delay):
                raise InvalidRequest(
                    f"{field}: aftercorr names a whole array (aftercorr:ID), with no element "
                    "or +MIN",
                    field=field,
                )
            if job_id > MAX_JOB_ID or (index is not None and index > MAX_JOB_ID):
                raise InvalidRequest(f"{field}: job ids go up to {MAX_JOB_ID}", field=field)
            if delay > MAX_DELAY_MIN:
                raise InvalidRequest(
                    f"{field}: +MIN delays go up to {MAX_DELAY_MIN} minutes", field=field
                )
            found.append(Dependency(kind, job_id, delay, any_of, index))
    if len(found) > MAX_DEPENDENCIES:
        raise InvalidRequest(f"{field}: at most {MAX_DEPENDENCIES} dependencies", field=field)
    return tuple(dict.fromkeys(found))


def format_dependencies(dependencies: Sequence[Dependency]) -> str:
    """Back to the text form; ids of one kind (and no delay) are joined: ``afterok:1:2``."""
    any_of = any(d.any_of for d in dependencies)
    parts: list[str] = []
    by_kind: dict[DependencyKind, int] = {}  # kind -> index of its part in ``parts``
    for dep in dependencies:
        text = dep.text()
        where = by_kind.get(dep.kind)
        if any_of or dep.kind is DependencyKind.SINGLETON or where is None:
            by_kind.setdefault(dep.kind, len(parts))
            parts.append(text)
        else:
            parts[where] += text[len(dep.kind) :]
    return ("?" if any_of else ",").join(parts)


@dataclass(frozen=True, slots=True)
class DependedJob:
    """What a dependency needs to know of one job depended on (one element of an array)."""

    state: JobState
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    index: int | None = None  # its index, when it is an element of an array


@dataclass(frozen=True, slots=True)
class DependencyStatus:
    ready: bool
    # Set when the dependency can never be met (e.g. afterok on a job that failed).
    never: str | None = None
    waiting_for: str = ""


def evaluate(
    dependencies: Sequence[Dependency],
    jobs: Mapping[int, Sequence[DependedJob | JobState]],
    *,
    now: dt.datetime | None = None,
    singleton_blocker: int | None = None,
    own_index: int | None = None,
) -> DependencyStatus:
    """Whether a job may be scheduled, given the jobs it depends on.

    ``jobs`` maps each depended-on id to its jobs (one job, or every element of an
    array); a bare ``JobState`` stands for a job with no times.  Missing ids count as
    never satisfiable.  ``singleton_blocker`` is a job of the same name and user that
    holds resources or is queued ahead (``None``: there is none).  ``now`` is needed
    only for ``+MIN`` delays; ``own_index`` (the job's index in its array) only for
    ``aftercorr``.
    """
    statuses = [_term(dep, jobs, now, singleton_blocker, own_index) for dep in dependencies]
    if not statuses:
        return DependencyStatus(True)
    if any(d.any_of for d in dependencies):
        if any(s.ready for s in statuses):
            return DependencyStatus(True)
        if all(s.never is not None for s in statuses):
            return DependencyStatus(False, never=" and ".join(str(s.never) for s in statuses))
        waiting = [s.waiting_for for s in statuses if s.never is None]
        return DependencyStatus(False, waiting_for=" or ".join(waiting))
    for status in statuses:
        if status.never is not None:
            return status
    waiting = [s.waiting_for for s in statuses if not s.ready]
    if waiting:
        return DependencyStatus(False, waiting_for=", ".join(waiting))
    return DependencyStatus(True)


def _term(
    dep: Dependency,
    jobs: Mapping[int, Sequence[DependedJob | JobState]],
    now: dt.datetime | None,
    singleton_blocker: int | None,
    own_index: int | None = None,
) -> DependencyStatus:
    if dep.kind is DependencyKind.SINGLETON:
        if singleton_blocker is not None:
            return DependencyStatus(False, waiting_for=f"job {singleton_blocker} (singleton)")
        return DependencyStatus(True)
    found = [j if isinstance(j, DependedJob) else DependedJob(j) for j in jobs.get(dep.job_id, ())]
    if not found:
        return DependencyStatus(False, never=f"job {dep.job_id} does not exist")
    target = dep.target
    if dep.index is not None:
        found = [j for j in found if j.index == dep.index]
        if not found:
            return DependencyStatus(False, never=f"job {target} does not exist")
    if dep.kind is DependencyKind.AFTER_CORR and own_index is not None:
        found = [j for j in found if j.index == own_index]
        target = f"{dep.job_id}_{own_index}"
        if not found:
            return DependencyStatus(True)  # no element of that index: nothing to wait for
    label = f"job {target} ({dep.text().partition(':')[0]})"
    if dep.kind is DependencyKind.AFTER:
        # Started, or ended without starting (cancelled while pending): the clock starts.
        anchors = [
            j.started_at or (j.finished_at if j.state.is_finished() else None) for j in found
        ]
        if any(a is None for a in anchors):
            return DependencyStatus(False, waiting_for=f"{label} to start")
        return _after_delay(dep, [a for a in anchors if a is not None], now, label)
    if not all(j.state.is_finished() for j in found):
        return DependencyStatus(False, waiting_for=label)
    succeeded = all(j.state is JobState.SUCCEEDED for j in found)
    if dep.kind in (DependencyKind.AFTER_OK, DependencyKind.AFTER_CORR) and not succeeded:
        return DependencyStatus(False, never=f"job {target} did not succeed ({dep.kind})")
    if dep.kind is DependencyKind.AFTER_NOT_OK and succeeded:
        return DependencyStatus(False, never=f"job {target} succeeded (afternotok)")
    ends = [j.finished_at for j in found if j.finished_at is not None]
    return _after_delay(dep, ends, now, label)


def _after_delay(
    dep: Dependency, anchors: Sequence[dt.datetime], now: dt.datetime | None, label: str
) -> DependencyStatus:
    if not dep.delay_min or not anchors:
        return DependencyStatus(True)
    due = max(anchors) + dt.timedelta(minutes=dep.delay_min)
    if now is None or now < due:
        return DependencyStatus(False, waiting_for=f"{label} +{dep.delay_min} min")
    return DependencyStatus(True)
