"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from virtuai import __version__
from virtuai.api.context import ApiContext
from virtuai.api.errors import install_error_handlers
from virtuai.api.routers import (
    doctor,
    fairshare,
    health,
    images,
    jobs,
    nodes,
    session,
    tenants,
    usage,
    users,
    vclusters,
)


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="virtuai",
        version=__version__,
        description="Self-hosted AI-on-demand platform: tenants, quotas, jobs, virtual clusters.",
        openapi_url="/api/v1/openapi.json",
        # The docs pages are served by virtuai.web, from assets in the package (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    install_error_handlers(app)
    for module in (
        health,
        users,
        tenants,
        jobs,
        usage,
        nodes,
        fairshare,
        vclusters,
        images,
        doctor,
        session,
    ):
        app.include_router(module.router)
    app.include_router(jobs.arrays_router)
    return app
