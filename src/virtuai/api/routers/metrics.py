"""``GET /metrics``: Prometheus' text format, for administrators and scrape accounts."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from virtuai.api.deps import CallerDep, Context
from virtuai.errors import Forbidden

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(caller: CallerDep, context: Context) -> Response:
    """Readable by administrators and by the users named in the `metrics.readers` setting
    (a scrape account: a user with no tenant, so it can do nothing else)."""
    if not caller.is_admin and caller.name not in context.metrics_readers:
        raise Forbidden("only administrators and metrics readers (setting metrics.readers)")
    assert context.metrics is not None
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
