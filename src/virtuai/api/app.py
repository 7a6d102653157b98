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
    sites,
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
        docs_url="/api/v1/docs",
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
        sites,
    ):
        app.include_router(module.router)
    app.include_router(jobs.arrays_router)
    return app
