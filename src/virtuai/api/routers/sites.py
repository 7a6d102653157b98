from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.sites import SiteCreate, SiteOut
from virtuai.errors import ConfigurationError
from virtuai.services import sites as service
from virtuai.store.db import transaction
from virtuai.store.models import SiteRow

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])


def site_to_api(session: Session, row: SiteRow) -> SiteOut:
    return SiteOut(
        name=row.name,
        kind=row.kind,
        state=row.state,
        login=row.login,
        local=row.login is None,
        partition=row.partition,
        pool=row.pool,
        account_map=row.account_map,
        max_jobs=row.max_jobs,
        health=row.health,
        message=row.message,
        partitions=row.partitions,
        capacity=row.capacity,
        queue_depth=row.queue_depth,
        expected_wait_s=row.expected_wait_s,
        running_jobs=service.running_jobs(session, row),
        last_seen_at=row.last_seen_at,
        unreachable_since=row.unreachable_since,
        created_at=row.created_at,
    )


@router.get("")
def list_sites(caller: CallerDep, context: Context) -> list[SiteOut]:
    with transaction(context.sessions) as session:
        return [site_to_api(session, r) for r in service.list_sites(session, caller)]


@router.get("/{name}")
def show_site(name: str, caller: CallerDep, context: Context) -> SiteOut:
    with transaction(context.sessions) as session:
        return site_to_api(session, service.get_site(session, caller, name))


@router.post("", status_code=status.HTTP_201_CREATED)
def add_site(body: SiteCreate, caller: CallerDep, context: Context) -> SiteOut:
    """Check the site (host key, login, partitions) and record it (administrators only)."""
    if context.site_keys_dir is None:
        raise ConfigurationError("this server has no directory for site keys")
    request = service.SiteRequest(
        name=body.name,
        local=body.local,
        login=body.login,
        identity=body.identity,
        known_hosts=body.known_hosts,
        partition=body.partition,
        account_map=body.account_map,
        max_jobs=body.max_jobs,
    )
    with context.sessions() as session:  # read only; the site is asked with none open
        prepared = service.prepare_site(session, caller, context.site_keys_dir, request)
    with transaction(context.sessions) as session:
        row = service.record_site(session, caller, context.clock, prepared)
        result = site_to_api(session, row)
    context.wake.set()
    return result


@router.delete("/{name}")
def remove_site(name: str, caller: CallerDep, context: Context) -> SiteOut:
    """Drain the site: no new jobs; it is removed when its last job has ended."""
    with transaction(context.sessions) as session:
        row = service.remove_site(session, caller, context.clock, name)
        result = site_to_api(session, row)
    context.wake.set()
    return result
