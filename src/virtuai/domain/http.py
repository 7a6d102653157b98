"""Names the platform gives to HTTP, shared by the API, the builtin proxy and the nginx
engine.  Standard library only: the nginx engine imports them before ``/healthz``
answers (``server/start.py``), when the proxy's heavy half is not loaded yet."""

from __future__ import annotations

# How long every process of ``virtuai up`` keeps an idle HTTP connection (uvicorn's
# ``timeout_keep_alive``).  A proxy in front (nginx) must drop its idle ones sooner: a
# POST sent on a connection just as the server closes it gets a 502, since a proxy
# never retries a request that is not idempotent.
API_KEEP_ALIVE_S = 5

# The browser's session cookie (``api/browser.py``); a workload may never set it.
SESSION_COOKIE = "virtuai_session"

# Never forwarded, either way (RFC 9110 7.6.1), by any hop of the proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
