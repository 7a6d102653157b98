"""``virtuai doctor``: can this server run virtual clusters, and what did they leave behind?

A leaked object is a kernel object or directory of this server's runtime (its
prefix, its state directory) that belongs to no cluster the database knows
(every cluster not ``deleted`` or ``failed``): left by a crash, or by a
database restored from an older backup.  Administrators only: the list names
other tenants' objects, and removing them kills what runs in them.

A cluster being created while the doctor looks is never taken for a leak: its
row is committed before anything of it is built, and an object counts as
leaked only if it is unknown both before and after the database is read again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from virtuai.services.access import Caller
from virtuai.services.vclusters import LIVE, VcRuntimeAccess
from virtuai.store.models import VirtualClusterRow
from virtuai.vcruntime import KernelObject, VcRuntime

KnownVcs = Callable[[], list[str]]  # reads the database in a short transaction of its own


@dataclass(frozen=True, slots=True)
class DoctorReport:
    available: bool
    problem: str | None  # why virtual clusters cannot run here
    leaked: list[KernelObject] = field(default_factory=list)
    removed: list[KernelObject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def known_vcs(session: Session) -> list[str]:
    """The runtime ids of every cluster that may own kernel objects."""
    return list(
        session.scalars(
            select(VirtualClusterRow.runtime_id).where(VirtualClusterRow.state.in_(LIVE))
        )
    )


def examine(caller: Caller, access: VcRuntimeAccess, known: KnownVcs) -> DoctorReport:
    caller.require_admin("run the doctor")
    if access.runtime is None:
        return DoctorReport(False, access.unavailable)
    return DoctorReport(True, None, _leaked(access.runtime, known))


def fix(caller: Caller, access: VcRuntimeAccess, known: KnownVcs) -> DoctorReport:
    """Remove the leaked objects; what could not be removed is listed in ``errors``."""
    report = examine(caller, access, known)
    if access.runtime is None or not report.leaked:
        return report
    errors = access.runtime.remove_leaked(report.leaked)
    left = _leaked(access.runtime, known)
    removed = [o for o in report.leaked if o not in left]
    return DoctorReport(True, None, left, removed, errors)


def _leaked(runtime: VcRuntime, known: KnownVcs) -> list[KernelObject]:
    first = runtime.leaked_objects(known())
    second = set(runtime.leaked_objects(known()))
    return [o for o in first if o in second]
