"""The one place where errors become HTTP responses.

Every error answers ``{code, message, field}``; never a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from virtuai import errors

log = logging.getLogger(__name__)

STATUS: dict[type[errors.VirtuaiError], int] = {
    errors.InvalidRequest: 422,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unschedulable: 422,
    errors.DriverError: 502,
    errors.UpstreamFailed: 502,
    errors.Unavailable: 503,
    errors.ConfigurationError: 500,
    errors.NotOffered: 409,
}


def status_of(error: errors.VirtuaiError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _body(code: str, message: str, field: str | None) -> dict[str, str | None]:
    return {"code": code, "message": message, "field": field}


def database_error_body(exc: OperationalError) -> dict[str, str | None]:
    """The answer (503) to a database error: the transaction was rolled back."""
    text = str(exc.orig).lower()
    message = (
        "the server's disk is full: nothing was recorded; try again when there is space"
        if "full" in text or "no space" in text
        else "the database is unavailable: nothing was recorded; try again"
    )
    return _body("unavailable", message, None)


def _not_json(error: Mapping[str, Any]) -> dict[str, str | None]:
    loc = tuple(error.get("loc", ()))
    where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
    reason = str((error.get("ctx") or {}).get("error", "")).strip()
    detail = f" ({reason}{where})" if reason else where
    return _body("invalid", f"body: the request body is not valid JSON{detail}", "body")


def _allowed(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path (405s are rare: no cache)."""
    # Of the templates that match, those with the most literal segments: /jobs/plan is
    # its own resource, not a /jobs/{job_id}.
    best = -1
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if not re.fullmatch(pattern, request.url.path):
            continue
        literal = sum(1 for part in template.split("/") if not part.startswith("{"))
        if literal > best:
            best, methods = literal, set()
        if literal == best:
            methods.update(m.upper() for m in operations)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.VirtuaiError)
    async def _virtuai(_: Request, exc: errors.VirtuaiError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthenticated) else None
        )
        return JSONResponse(exc.to_dict(), status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if tuple(first.get("loc", ()))[:1] == ("path",):
            # GET /jobs/bulk reaches GET /jobs/{job_id} ("bulk" is no id), but /jobs/bulk
            # is a resource of its own that takes POST only: that is a 405, not a 422.
            allowed = _allowed(request)
            if allowed and request.method not in allowed:
                return JSONResponse(
                    _body("http_error", "Method Not Allowed", None),
                    status_code=405,
                    headers={"Allow": ", ".join(allowed)},
                )
        if first.get("type") == "json_invalid":
            # Its loc is ("body", <character offset>): the offset is no field.
            return JSONResponse(_not_json(first), status_code=422)
        # ("body", "resources", "memory") -> "resources.memory"
        loc = tuple(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]  # where it came from; a field may itself be called "path"
        location = [str(part) for part in loc if part != "[key]"]
        field = ".".join(location) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if field:
            message = f"{field}: {message}"
        return JSONResponse(_body("invalid", message, field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        # A body FastAPI could not parse at all (JSON nested too deep to read) is a 400.
        field = "body" if exc.status_code == 400 else None
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # The Allow header (RFC 9110), of every route of the path: Starlette names only
            # the first route's methods (POST for /jobs, which also takes GET).
            headers = {"Allow": ", ".join(_allowed(request))}
        return JSONResponse(
            _body(code, str(exc.detail), field), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        # The transaction was rolled back: nothing of the request was recorded.
        log.error("database error in %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse(database_error_body(exc), status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            _body("internal", "internal error; the server log has the details", None),
            status_code=500,
        )
