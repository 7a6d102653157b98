"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from virtuai import __version__
from virtuai.api.context import ApiContext
from virtuai.api.errors import install_error_handlers
from virtuai.api.fastread import FastRead
from virtuai.api.fastsubmit import FastSubmit
from virtuai.api.middleware import ContainErrors, MeasureRequests, RequestLimits
from virtuai.api.routers import (
    datasets,
    doctor,
    environments,
    fairshare,
    health,
    images,
    jobs,
    metrics,
    nodes,
    notebooks,
    portforward,
    priorityclasses,
    services,
    session,
    sites,
    tenants,
    tokens,
    usage,
    users,
    vcexec,
    vclusters,
)
from virtuai.api.schemas.common import ErrorOut
from virtuai.services.metrics import Metrics

ERROR_RESPONSES = {
    400: "Malformed request (a body that is not JSON text)",
    401: "No valid credentials",
    403: "Not allowed to the caller",
    404: "Not found, or not visible to the caller",
    409: "In conflict with the current state",
    413: "Request body over the server's limit",
    422: "Invalid request; `field` names what is wrong",
}


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="virtuai",
        version=__version__,
        description="Self-hosted AI-on-demand platform: tenants, quotas, jobs, virtual clusters.",
        openapi_url="/api/v1/openapi.json",
        # The docs pages are served by virtuai.web, from assets in the package (no CDN).
        docs_url=None,
        redoc_url=None,
        # Every answer that is not a success has the one error shape (api/errors.py).
        responses={
            code: {"model": ErrorOut, "description": description}
            for code, description in ERROR_RESPONSES.items()
        },
    )
    app.state.context = context
    install_error_handlers(app)
    if context.metrics is None:
        context.metrics = Metrics(context.sessions)
    # Innermost: the common submit answered without the framework's per-request work.
    app.add_middleware(FastSubmit, context=context)
    # Just outside it: the common job page and job detail, likewise (api/fastread.py).
    app.add_middleware(FastRead, context=context)
    app.add_middleware(MeasureRequests, metrics=context.metrics)
    # Added last = outermost: the size limit runs before authentication and parsing.
    app.add_middleware(ContainErrors)
    app.add_middleware(RequestLimits, max_body_bytes=context.max_body_bytes)
    for module in (
        health,
        users,
        tokens,
        tenants,
        jobs,
        usage,
        nodes,
        fairshare,
        priorityclasses,
        vclusters,
        images,
        doctor,
        metrics,
        session,
        sites,
        vcexec,
        environments,
        portforward,
        datasets,
        notebooks,
        services,
    ):
        app.include_router(module.router)
    app.include_router(jobs.arrays_router)
    return app


def warm_routes(app: FastAPI) -> None:
    """Build every route's request handling now, instead of at its first request.

    FastAPI (0.16x) builds an included router's routes (their parameter models: a pydantic
    ``TypeAdapter`` per field) the first time a request is matched against that router.
    After a restart, the first page of jobs took 0.27-0.5 s of one core for it, holding
    the GIL, and every request in flight waited behind it (#7: the first requests of the
    scale bench were most of its p99).  Matching a scope against every route builds them
    all; where FastAPI builds routes when they are included, it finds them built.
    """
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    for route in app.router.routes:
        route.matches(dict(scope))
