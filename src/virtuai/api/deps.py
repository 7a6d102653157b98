"""FastAPI dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from virtuai.api.browser import Source, credential_from_request
from virtuai.api.context import ApiContext
from virtuai.auth.sessions import verify_session
from virtuai.auth.tokens import looks_like_api_token
from virtuai.errors import Unauthenticated
from virtuai.services.access import Caller
from virtuai.services.identity import authenticate_identity, authenticate_token
from virtuai.store.db import transaction

# Declared for the OpenAPI schema only; the credential is read by credential_from_request,
# which also accepts the browser's session cookie.
_bearer = HTTPBearer(auto_error=False, description="an API token (vai_...) or an OIDC JWT")


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def get_caller(
    request: Request, context: Context, _schema: Annotated[object, Depends(_bearer)]
) -> Caller:
    return authenticate(request, context)


def authenticate(request: Request, context: ApiContext) -> Caller:
    """Who sends ``request``: by its Bearer header, else by the browser's session cookie.

    A plain function so that other entry points (the notebook proxy) authenticate
    exactly as the API does.
    """
    credential, source = credential_from_request(request)
    if looks_like_api_token(credential):
        with transaction(context.sessions) as session:
            return authenticate_token(session, credential, context.clock.now())
    if source is Source.COOKIE:
        # A browser signed in with OIDC: the identity was verified at sign-in.
        identity = verify_session(credential, context.browser.key, context.clock.now().timestamp())
    elif not context.verifier.enabled:
        raise Unauthenticated("invalid token")
    else:
        # Verify before opening a transaction: fetching the provider's keys may take seconds.
        identity = context.verifier.verify(credential)
    with transaction(context.sessions) as session:
        return authenticate_identity(session, identity, context.clock.now())


CallerDep = Annotated[Caller, Depends(get_caller)]
