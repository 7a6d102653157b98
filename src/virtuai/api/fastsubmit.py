"""``POST /api/v1/jobs`` without FastAPI's per-request machinery, for the common case.

Under 16 clients the event loop, not the database, bounded submits once they were
committed in groups (store/groupcommit.py): of the loop's time per submit, routing,
dependency solving (``solve_dependencies``: the caller, the context, the security
scheme) and the layers around them took about three quarters, the endpoint itself
a sixth (docs/benchmarks.md, "API submits").

This ASGI middleware sits innermost among the application's own (request limits,
error containment and metrics still apply) and answers a submit itself when it is
the common case: a Bearer API token already in the token cache, a JSON body that
``JobCreate`` accepts.  It does what the endpoint does, with the same functions:
``request_from_api``, ``service.submit_job`` through the group commit, the same
bytes out.  A refusal of the service (quota, dependency, tenant: a ``VirtuaiError``)
and a database error are answered as the error handlers would.  Anything before the
work (another credential, a token not cached, a body that does not validate) goes to
the full application with the body replayed, so that every other behaviour, and
every error message, stays that of the one endpoint.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtuai.api.context import ApiContext
from virtuai.api.errors import database_error_body, status_of
from virtuai.api.routers import jobs
from virtuai.api.schemas.jobs import JobCreate
from virtuai.auth.tokens import hash_token, looks_like_api_token
from virtuai.errors import VirtuaiError

PATH = "/api/v1/jobs"
_JSON = (b"content-type", b"application/json")

log = logging.getLogger(__name__)


class FastSubmit:
    def __init__(self, app: ASGIApp, context: ApiContext) -> None:
        self.app = app
        self.context = context
        # Put in the scope as the router would: the metrics label requests by route.
        self.route = next(
            r for r in jobs.router.routes if isinstance(r, APIRoute) and r.endpoint is jobs.submit
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        caller = self._cached_caller(scope)
        if caller is None:
            await self.app(scope, receive, send)
            return
        body, ended = await _read_body(receive)
        if not ended:
            return  # the client went away
        response = await self._submit(caller, body)
        if response is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self.route
        if isinstance(response, bytes):  # the job's answer: as Response(...) sends it
            headers = [(b"content-length", b"%d" % len(response)), _JSON]
            await send({"type": "http.response.start", "status": 201, "headers": headers})
            await send({"type": "http.response.body", "body": response})
            return
        await response(scope, receive, send)

    def _cached_caller(self, scope: Scope) -> Any:
        """The caller behind a Bearer API token in the cache; None: any other case."""
        authorization = content_type = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"content-type":
                content_type = value
        if authorization is None or content_type != b"application/json":
            return None
        return cached_bearer_caller(self.context, authorization)

    async def _submit(self, caller: Any, body: bytes) -> Response | bytes | None:
        """The answer: a job's (bytes, 201), an error's, or None: the endpoint's to give."""
        context = self.context
        try:
            parsed = json.loads(body)
            request = jobs.request_from_api(JobCreate.model_validate(parsed), context.rules)
        except (ValueError, RecursionError, ValidationError, VirtuaiError):
            # RecursionError: JSON nested thousands deep, which json.loads cannot read.
            return None  # the endpoint words the error (field and all)

        # Once the work was handed over, an error is answered here, never by a second
        # try through the endpoint: a commit that failed on a lost PostgreSQL
        # connection may have been applied, and a retry would record the job twice.
        try:
            content, wake = await context.submits.run(jobs.recorder(caller, request, context))
        except VirtuaiError as error:  # as api/errors.py answers it
            return JSONResponse(error.to_dict(), status_code=status_of(error))
        except OperationalError as error:
            log.error("database error in POST %s: %s", PATH, error.orig)
            return JSONResponse(database_error_body(error), status_code=503)
        # Anything else goes up to the application's handler of unexpected errors (500).
        # A job that waits for another's end cannot start now: its pass can wait for the
        # next tick, or for that end, which wakes the loops itself.
        if wake and not context.wake.is_set():
            context.wake.set()
        return content


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def cached_bearer_caller(context: ApiContext, authorization: bytes) -> Any:
    """The caller behind an ``Authorization: Bearer <API token>`` already in the token
    cache; None: any other credential, or a token not cached (the full app's to read)."""
    scheme, _, credential = authorization.decode("latin-1").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not looks_like_api_token(credential):
        return None
    return context.tokens.get(hash_token(credential))
