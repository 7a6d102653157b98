from __future__ import annotations

from fastapi import APIRouter

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.doctor import DoctorOut, LeakedObjectOut
from virtuai.services import doctor as service
from virtuai.store.db import transaction
from virtuai.vcruntime import KernelObject

router = APIRouter(prefix="/api/v1/doctor", tags=["doctor"])


def _object(o: KernelObject) -> LeakedObjectOut:
    return LeakedObjectOut(kind=o.kind.value, name=o.name, vc=o.vc_id or o.tag)


def _to_api(report: service.DoctorReport, context: Context) -> DoctorOut:
    return DoctorOut(
        services_isolated=context.service_ports_problem is None,
        services_problem=context.service_ports_problem,
        virtual_clusters=report.available,
        problem=report.problem,
        leaked=[_object(o) for o in report.leaked],
        removed=[_object(o) for o in report.removed],
        errors=report.errors,
    )


def _known(context: Context) -> service.KnownVcs:
    def read() -> list[str]:
        with transaction(context.sessions) as session:
            return service.known_vcs(session)

    return read


@router.get("")
def examine(caller: CallerDep, context: Context) -> DoctorOut:
    """Can this server run virtual clusters; which kernel objects belong to no cluster
    (administrators only)."""
    return _to_api(service.examine(caller, context.vcs, _known(context)), context)


@router.post("/fix")
def fix(caller: CallerDep, context: Context) -> DoctorOut:
    """Remove the kernel objects and directories that belong to no cluster (administrators
    only)."""
    return _to_api(service.fix(caller, context.vcs, _known(context)), context)
