"""FastAPI dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from virtuai.api.context import ApiContext
from virtuai.auth.jobtokens import looks_like_job_token, verify_job_token
from virtuai.auth.tokens import looks_like_api_token
from virtuai.errors import Unauthenticated
from virtuai.services.access import Caller
from virtuai.services.identity import authenticate_identity, authenticate_token
from virtuai.store.db import transaction

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
        with transaction(context.sessions) as session:
            return authenticate_token(session, credential, context.clock.now())
    if not context.verifier.enabled:
        raise Unauthenticated("invalid token")
    # Verify before opening a transaction: fetching the provider's keys may take seconds.
    identity = context.verifier.verify(credential)
    with transaction(context.sessions) as session:
        return authenticate_identity(session, identity, context.clock.now())


CallerDep = Annotated[Caller, Depends(get_caller)]


@dataclass(frozen=True, slots=True)
class JobCredential:
    """A running job acting on itself with its job token (``scontrol requeue``)."""

    job_id: int
    attempt: int


def get_caller_or_job(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller | JobCredential:
    if credentials is not None and looks_like_job_token(credentials.credentials):
        found = verify_job_token(context.job_token_key, credentials.credentials)
        if found is None:
            raise Unauthenticated("invalid job token")
        return JobCredential(*found)
    return get_caller(context, credentials)


CallerOrJobDep = Annotated[Caller | JobCredential, Depends(get_caller_or_job)]
