from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from virtuai.api.deps import Context
from virtuai.store.db import read_transaction

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(context: Context) -> dict[str, str]:
    """Liveness and database reachability, for load balancers and `virtuai up --wait`."""
    with read_transaction(context.sessions) as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
