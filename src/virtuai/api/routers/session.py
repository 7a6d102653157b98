"""Browser sign-in and sign-out: the session cookie (``api/browser.py``) is set and cleared here."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from virtuai.api.browser import (
    FLOW_COOKIE,
    clear_flow_cookie,
    clear_session_cookie,
    require_csrf_header,
    set_flow_cookie,
    set_session_cookie,
)
from virtuai.api.deps import Context
from virtuai.api.routers.users import user_to_api
from virtuai.api.schemas.common import StrictModel
from virtuai.api.schemas.users import UserOut
from virtuai.auth.sessions import new_flow, sign_flow, sign_session, verify_flow
from virtuai.auth.tokens import looks_like_api_token
from virtuai.errors import InvalidRequest, NotFound, Unauthenticated, VirtuaiError
from virtuai.services.identity import authenticate_identity, authenticate_token, load_user
from virtuai.store.db import transaction

router = APIRouter(prefix="/api/v1/session", tags=["session"])


class SessionOptions(BaseModel):
    oidc: bool = Field(description="sign-in with the OIDC provider is offered")


class TokenLogin(StrictModel):
    token: str = Field(min_length=1, max_length=256, description="an API token (vai_...)")


@router.get("/options")
def options(context: Context) -> SessionOptions:
    """How a browser may sign in (no authentication needed)."""
    return SessionOptions(oidc=context.browser.oidc is not None)


@router.post("")
def login(body: TokenLogin, request: Request, response: Response, context: Context) -> UserOut:
    """Sign a browser in with an API token: the answer sets the session cookie."""
    # Login CSRF (signing a victim into the attacker's account) is refused the same way.
    require_csrf_header(request)
    if not looks_like_api_token(body.token):
        raise Unauthenticated("not an API token: it starts with 'vai_'")
    with transaction(context.sessions) as session:
        caller = authenticate_token(session, body.token, context.clock.now())
        user = user_to_api(load_user(session, caller.user_id))
    set_session_cookie(response, request, body.token, context.browser.ttl_s)
    return user


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response) -> None:
    """Sign out: the cookie is cleared (an API token itself stays valid; revoke it to end it)."""
    require_csrf_header(request)
    clear_session_cookie(response, request)


def _redirect_uri(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


def _safe_next(path: str) -> str:
    # Only paths of this site: never an open redirect to another one.
    return path if path.startswith("/") and not path.startswith("//") else "/"


# The two legs of the OIDC code flow are pages a browser is sent to, not API calls: they
# answer redirects and HTML, so they stay out of the OpenAPI document.
@router.get(
    "/oidc/login", response_class=RedirectResponse, status_code=302, include_in_schema=False
)
def oidc_login(
    request: Request,
    context: Context,
    next_path: Annotated[str, Query(alias="next", max_length=1024)] = "/",
) -> RedirectResponse:
    """First leg of the code flow: off to the provider, with PKCE, state and nonce."""
    oidc = context.browser.oidc
    if oidc is None:
        raise NotFound("sign-in with OIDC is not configured on this server")
    flow = new_flow(_safe_next(next_path))
    target = oidc.authorization_url(flow, _redirect_uri(request))
    response = RedirectResponse(target, status_code=302)
    now = context.clock.now().timestamp()
    set_flow_cookie(response, request, sign_flow(flow, context.browser.key, now))
    return response


@router.get(
    "/oidc/callback", name="oidc_callback", response_class=HTMLResponse, include_in_schema=False
)
def oidc_callback(
    request: Request,
    context: Context,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=1024)] = None,
    error: Annotated[str | None, Query(max_length=1024)] = None,
    error_description: Annotated[str | None, Query(max_length=4096)] = None,
) -> HTMLResponse:
    """Second leg: the provider sends the browser back with a code, traded here for an identity."""
    oidc = context.browser.oidc
    if oidc is None:
        raise NotFound("sign-in with OIDC is not configured on this server")
    now = context.clock.now().timestamp()
    try:
        if error is not None:
            raise Unauthenticated(f"the identity provider said: {error_description or error}")
        if not code or not state:
            raise InvalidRequest("code and state are required", field="code")
        raw_flow = request.cookies.get(FLOW_COOKIE)
        if not raw_flow:
            raise Unauthenticated("no sign-in in progress in this browser: start again")
        flow = verify_flow(raw_flow, context.browser.key, now)
        identity = oidc.finish(flow, state, code, _redirect_uri(request))
        with transaction(context.sessions) as session:
            # Provision the user now, so that a refusal (a local user of the same name) shows here.
            authenticate_identity(session, identity, context.clock.now())
    except VirtuaiError as failure:
        page = _page(
            "Sign-in failed", f"<p>{html.escape(failure.message)}</p><p><a href='/'>Back</a></p>"
        )
        response = HTMLResponse(page, status_code=401)
        clear_flow_cookie(response, request)
        return response
    session_token = sign_session(identity, context.browser.key, now, context.browser.ttl_s)
    # A page that moves on by itself rather than a redirect: a SameSite=Strict cookie set in
    # answer to the provider's (cross-site) redirect is sent only by a navigation this site
    # starts.
    target = html.escape(_safe_next(flow.next_path), quote=True)
    page = _page("Signed in", f"<p>Signed in. <a href='{target}'>Continue</a></p>", refresh=target)
    response = HTMLResponse(page)
    set_session_cookie(response, request, session_token, context.browser.ttl_s)
    clear_flow_cookie(response, request)
    return response


def _page(title: str, body: str, refresh: str | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="0;url={refresh}">' if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}"
        f"<title>virtuai: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
