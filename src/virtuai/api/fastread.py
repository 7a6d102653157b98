"""``GET /api/v1/jobs`` and ``GET /api/v1/jobs/{id}`` without FastAPI's per-request
machinery, for the common case (the read paths of #7 §2 "Scale").

Under the scale load (200 clients; 60% pages, 30% details) the event loop's share of
a read was mostly the framework's: matching the path against every route of every
router, solving the dependencies (caller, context, security scheme), validating the
query, the layers around them (docs/benchmarks.md, "The read paths").  As
``api/fastsubmit.py`` does for submits, this middleware answers a read itself when it
is the common case: a Bearer API token already in the token cache, and a query whose
every parameter is one the endpoint takes, given once, with a value the endpoint
accepts (plain decimal integers within the endpoint's bounds, names within its
lengths).  It calls the endpoint's own function, in the same thread pool, so the bytes
and headers are the endpoint's.  Anything else, and any refusal of the service (an
unknown state, a tenant not visible: a ``VirtuaiError``) or database error, goes to
the full application: a read done twice changes nothing, and every error keeps the
one endpoint's wording.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from virtuai.api.context import ApiContext
from virtuai.api.fastsubmit import cached_bearer_caller
from virtuai.api.routers import jobs
from virtuai.errors import VirtuaiError

PATH = "/api/v1/jobs"
_ONE = PATH + "/"
_MAX_BEFORE_ID = 2**63 - 1
_MAX_USER = 63  # the endpoint's max_length of ``user``
# The page's integer parameters and their bounds (the endpoint's Query(ge=..., le=...)).
_INTS = {
    "limit": (1, jobs.MAX_PAGE),
    "before_id": (1, _MAX_BEFORE_ID),
    "array_id": (1, jobs.MAX_ID),
}
_TEXTS = frozenset({"tenant", "state", "user"})


class FastRead:
    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context
        # Put in the scope as the router would: the metrics label requests by route.
        routes = [r for r in jobs.router.routes if isinstance(r, APIRoute)]
        self.page_route = next(r for r in routes if r.endpoint is jobs.list_jobs)
        self.one_route = next(r for r in routes if r.endpoint is jobs.get_job)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = None
        if scope["type"] == "http" and scope["method"] == "GET":
            response = await self._answer(scope)
        if response is None:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        path: str = scope["path"]
        if path == PATH:
            params = page_params(scope["query_string"])
            if params is None:
                return None
            route, work = self.page_route, _page
        elif path.startswith(_ONE):
            job_id = bounded_int(path[len(_ONE) :], 1, jobs.MAX_ID)
            if job_id is None or scope["query_string"]:
                return None
            route, work, params = self.one_route, _one, {"job_id": job_id}
        else:
            return None
        caller = self._cached_caller(scope)
        if caller is None:
            return None
        try:
            response: Response = await run_in_threadpool(work, caller, self.context, params)
        except (VirtuaiError, OperationalError):
            return None  # the full application answers (and words) it
        scope["route"] = route
        return response

    def _cached_caller(self, scope: Scope) -> Any:
        """The caller behind a Bearer API token in the cache; None: any other case."""
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                if authorization is not None:
                    return None
                authorization = value
        if authorization is None:
            return None
        return cached_bearer_caller(self.context, authorization)


def _page(caller: Any, context: ApiContext, params: dict[str, Any]) -> Response:
    return jobs.list_jobs(caller, context, **params)


def _one(caller: Any, context: ApiContext, params: dict[str, Any]) -> Response:
    return jobs.get_job(params["job_id"], caller, context)


def page_params(query: bytes) -> dict[str, Any] | None:
    """The page's parameters if the endpoint would accept them all as given; else None."""
    params: dict[str, Any] = {"limit": jobs.DEFAULT_PAGE}
    seen: set[str] = set()
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    for key, value in pairs:
        if key in seen:
            return None
        seen.add(key)
        if key in _INTS:
            number = bounded_int(value, *_INTS[key])
            if number is None:
                return None
            params[key] = number
        elif key in _TEXTS:
            if not value or (key == "user" and len(value) > _MAX_USER):
                return None  # a blank value is the endpoint's to read
            params[key] = value
        else:
            return None
    return params


def bounded_int(text: str, low: int, high: int) -> int | None:
    """``text`` as a plain decimal integer within [low, high]; None: anything else."""
    # No sign, space, underscore or leading zero: a strict subset of what the endpoint's
    # integer parsing accepts, so both paths read the same number.
    if not (text.isascii() and text.isdigit()) or text[0] == "0" or len(text) > 20:
        return None
    number = int(text)
    return number if low <= number <= high else None
