"""A service's event history (``ServiceEventRow``): written by whoever changes the service,
read by ``service show``; bounded per service."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from virtuai.store.models import ServiceEventRow

# Enough to see a crash loop, a roll or a night's scaling; a service that lives for months
# does not grow a table without end.
KEPT = 50


def record_service_event(session: Session, service_id: int, message: str, now: dt.datetime) -> None:
    """Add ``message`` to the service's history, and drop what falls beyond ``KEPT``."""
    session.add(ServiceEventRow(service_id=service_id, at=now, message=message))
    session.flush()
    oldest_kept = session.scalar(
        select(ServiceEventRow.id)
        .where(ServiceEventRow.service_id == service_id)
        .order_by(ServiceEventRow.id.desc())
        .offset(KEPT - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(ServiceEventRow).where(
                ServiceEventRow.service_id == service_id, ServiceEventRow.id < oldest_kept
            )
        )


def recent_service_events(
    session: Session, service_id: int, limit: int = 20
) -> list[ServiceEventRow]:
    """The service's last ``limit`` events, oldest first."""
    rows = session.scalars(
        select(ServiceEventRow)
        .where(ServiceEventRow.service_id == service_id)
        .order_by(ServiceEventRow.id.desc())
        .limit(limit)
    )
    return list(rows)[::-1]
