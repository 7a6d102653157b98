"""FastAPI dependencies: the server context and the authenticated caller."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from virtuai.api.browser import Source, credential_from_request
from virtuai.api.context import ApiContext
from virtuai.auth.jobtokens import looks_like_job_token, verify_job_token
from virtuai.auth.sessions import verify_session
from virtuai.auth.tokens import hash_token, looks_like_api_token
from virtuai.errors import Unauthenticated
from virtuai.services.access import Caller
from virtuai.services.identity import (
    authenticate_identity,
    caller_for_token_hash,
    needs_touch,
    touch_token,
)
from virtuai.store.db import read_transaction, transaction

# Declared for the OpenAPI schema only; the credential is read by credential_from_request,
# which also accepts the browser's session cookie.
_NO_CACHE_BEFORE_EXPIRY = dt.timedelta(seconds=10)

_bearer = HTTPBearer(auto_error=False, description="an API token (vai_...) or an OIDC JWT")


# The dependencies are coroutines: FastAPI runs a plain function dependency in its thread
# pool, one hop there and back per dependency and per request; under 200 clients those hops
# queued behind the endpoints themselves (docs/benchmarks.md, "API under 200 clients").


async def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def get_caller(
    request: Request, context: Context, _schema: Annotated[object, Depends(_bearer)]
) -> Caller:
    # A cached API token costs a hash and a dict lookup: answered on the event loop.  Any
    # other case may read (or write) the database, which must never block the loop.
    credential, _ = credential_from_request(request)
    if looks_like_api_token(credential):
        known = context.tokens.get(hash_token(credential))
        if known is not None:
            return known
    return await run_in_threadpool(authenticate, request, context)


def authenticate(request: Request, context: ApiContext) -> Caller:
    """Who sends ``request``: by its Bearer header, else by the browser's session cookie.

    A plain function so that other entry points (the notebook proxy) authenticate
    exactly as the API does.
    """
    credential, source = credential_from_request(request)
    if source is Source.COOKIE and not looks_like_api_token(credential):
        # A browser signed in with OIDC: the identity was verified at sign-in.
        identity = verify_session(credential, context.browser.key, context.clock.now().timestamp())
        with transaction(context.sessions) as session:
            return authenticate_identity(session, identity, context.clock.now())
    return bearer_caller(context, credential)


def bearer_caller(context: ApiContext, credential: str, *, cached: bool = True) -> Caller:
    """The caller behind an API token or an OIDC JWT sent as a Bearer credential."""
    if looks_like_api_token(credential):
        return _token_caller(context, credential, cached=cached)
    if not context.verifier.enabled:
        raise Unauthenticated("invalid token")
    # Verify before opening a transaction: fetching the provider's keys may take seconds.
    identity = context.verifier.verify(credential)
    with transaction(context.sessions) as session:
        return authenticate_identity(session, identity, context.clock.now())


def websocket_caller(connection: HTTPConnection, context: ApiContext) -> Caller:
    """The caller of a WebSocket: its Bearer header only, never the browser's cookie.

    WebSockets are not subject to CORS: a cookie would let any web page the user
    visits open the socket in the user's name (cross-site WebSocket hijacking).
    """
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    return bearer_caller(context, value.strip())


def _token_caller(context: ApiContext, token: str, *, cached: bool = True) -> Caller:
    """Cached by hash for a moment (``services.tokencache`` says why that is safe); a miss
    reads without the write lock, and records the use at most once a minute.  With
    ``cached=False`` the database is read even on a hit (a refresh ahead of expiry)."""
    digest = hash_token(token)
    known = context.tokens.get(digest) if cached else None
    if known is not None:
        return known
    generation = context.tokens.generation()
    now = context.clock.now()
    with read_transaction(context.sessions) as session:
        holder = caller_for_token_hash(session, digest, now)
    if needs_touch(holder.last_used_at, now):
        with transaction(context.sessions) as session:
            touch_token(session, digest, now)
    # A token about to expire is not remembered: expiry must refuse it at once.
    if holder.expires_at is None or holder.expires_at - now > _NO_CACHE_BEFORE_EXPIRY:
        context.tokens.put(digest, holder.caller, generation)
    return holder.caller


CallerDep = Annotated[Caller, Depends(get_caller)]


@dataclass(frozen=True, slots=True)
class JobCredential:
    """A running job acting on itself with its job token (``scontrol requeue``)."""

    job_id: int
    attempt: int


async def get_caller_or_job(
    request: Request, context: Context, _schema: Annotated[object, Depends(_bearer)]
) -> Caller | JobCredential:
    credential, source = credential_from_request(request)
    if source is not Source.COOKIE and looks_like_job_token(credential):
        found = verify_job_token(context.job_token_key, credential)
        if found is None:
            raise Unauthenticated("invalid job token")
        return JobCredential(*found)
    return await get_caller(request, context, _schema)


CallerOrJobDep = Annotated[Caller | JobCredential, Depends(get_caller_or_job)]
