"""FastAPI dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from virtuai.api.context import ApiContext
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

_bearer = HTTPBearer(auto_error=False, description="an API token (vai_...) or an OIDC JWT")


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def get_caller(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    credential = credentials.credentials
    if looks_like_api_token(credential):
        return _token_caller(context, credential)
    if not context.verifier.enabled:
        raise Unauthenticated("invalid token")
    # Verify before opening a transaction: fetching the provider's keys may take seconds.
    identity = context.verifier.verify(credential)
    with transaction(context.sessions) as session:
        return authenticate_identity(session, identity, context.clock.now())


def _token_caller(context: ApiContext, token: str) -> Caller:
    """Cached by hash for a moment (``services.tokencache`` says why that is safe); a miss
    reads without the write lock, and records the use at most once a minute."""
    digest = hash_token(token)
    cached = context.tokens.get(digest)
    if cached is not None:
        return cached
    generation = context.tokens.generation()
    with read_transaction(context.sessions) as session:
        caller, last_used_at = caller_for_token_hash(session, digest)
    now = context.clock.now()
    if needs_touch(last_used_at, now):
        with transaction(context.sessions) as session:
            touch_token(session, digest, now)
    context.tokens.put(digest, caller, generation)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
