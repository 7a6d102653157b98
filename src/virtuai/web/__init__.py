"""The web dashboard: a small browser application over the public REST API.

This package only *serves files*: ``static/`` holds the dashboard (plain ES
modules, no build step, see ``docs/architecture.md``) and vendored copies of
Swagger UI and ReDoc for the API docs pages, all package data, so nothing is
ever loaded from a CDN and the dashboard works on an offline cluster.  The
browser code talks to ``/api/v1`` only, signed in by the session cookie of
``virtuai.api.browser``; nothing here reads the database.

Routes added by :func:`mount`: ``/`` (the dashboard), ``/static/...``,
``/api/v1/docs`` (Swagger UI), ``/api/v1/redoc`` (ReDoc), and ``/docs``,
``/redoc`` redirecting to them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
OPENAPI_URL = "/api/v1/openapi.json"

# The dashboard runs only its own files: no inline script, nothing from elsewhere.
# (The docs pages get their own policy, below.)
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


# The docs pages: FastAPI starts Swagger UI and ReDoc with inline scripts and styles, and
# ReDoc shows a logo from its CDN (hidden when it fails to load); the policy keeps the
# browser from trying anything off this server.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _with_csp(response: HTMLResponse, policy: str) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


class _RevalidatedFiles(StaticFiles):
    """Static files the browser must revalidate (ETag -> 304), so an upgrade shows at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if not path.startswith("vendor/"):
            response.headers["Cache-Control"] = "no-cache"
        else:
            response.headers["Cache-Control"] = "public, max-age=86400"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount(app: FastAPI) -> None:
    """Add the dashboard and the API docs pages to ``app``."""
    app.mount("/static", _RevalidatedFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": DASHBOARD_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
            },
        )

    @app.get("/api/v1/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title="virtuai API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
            # No validator badge: it would send the schema to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
        return _with_csp(page, DOCS_CSP)

    @app.get("/api/v1/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=OPENAPI_URL,
            title="virtuai API",
            redoc_js_url="/static/vendor/redoc/redoc.standalone.js",
            redoc_favicon_url="/static/favicon.svg",
            with_google_fonts=False,
        )
        return _with_csp(page, DOCS_CSP)

    @app.get("/docs", include_in_schema=False)
    def docs_redirect() -> RedirectResponse:
        return RedirectResponse("/api/v1/docs")

    @app.get("/redoc", include_in_schema=False)
    def redoc_redirect() -> RedirectResponse:
        return RedirectResponse("/api/v1/redoc")
