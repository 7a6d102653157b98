"""Workloads on other machines: the request goes to the server of the node that runs them.

Every machine runs ``virtuai up`` (docs/architecture.md, "Several machines"), so a user
may reach any of them.  A notebook on another node listens on that node's registered
address, but only for the secret derived from *that* machine's key
(``auth.jobtokens.notebook_secret``): machines need not share keys, so this proxy
cannot talk to the workload itself.  It hands the request, with the caller's own
credential, to the proxy of the workload's node (``http://<node address>:<port>``,
every server listening on the same port), which authenticates and authorises again
and forwards to the workload on its own machine.  The caller is checked here first,
so refusals (401, 403, the sign-in redirect) cost no hop.

A forwarded request carries ``X-Virtuai-Forwarded-By: <node>``; a server never
forwards such a request again (two servers whose reading of the database differs for
a moment answer 503 rather than pass a request back and forth).

A cookie-signed request was checked for its origin here (``proxy.auth``); the hop
says so with ``X-Virtuai-Csrf: 1``, as the dashboard's own requests do.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from virtuai.api.browser import CSRF_HEADER
from virtuai.control.notebooks import Upstream
from virtuai.domain.http import HOP_BY_HOP
from virtuai.domain.notebooks import AUTH_HEADER, SECRET_HEADER
from virtuai.services.portforward import FORWARDED_BY as PORT_FORWARDED_BY

FORWARDED_BY = PORT_FORWARDED_BY.lower()
_FORWARDED_BY_RAW = FORWARDED_BY.encode()
# Never passed on: what only a proxy may say to a workload, and a forged hop mark.
_NEVER = HOP_BY_HOP | {SECRET_HEADER.lower(), AUTH_HEADER.lower(), FORWARDED_BY}
# A WebSocket's handshake headers are made by the client library.
_NEVER_WS = _NEVER | {
    "host",
    "origin",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
}


@dataclass(frozen=True, slots=True)
class Peers:
    """This server's own nodes, and the port every server listens on (0: no forwarding)."""

    own_nodes: frozenset[str] = frozenset()
    port: int = 0
    name: str = ""  # this server's node, said in the hop mark

    def remote(self, upstream: Upstream) -> bool:
        """Whether ``upstream`` runs on another machine's node (never, when this server's
        own nodes are not known: then everything is taken for local, as on one machine)."""
        return bool(upstream.node and self.own_nodes) and upstream.node not in self.own_nodes

    def local(self, upstream: Upstream) -> bool:
        return not self.remote(upstream)

    def url(self, upstream: Upstream, scheme: str = "http") -> str:
        """Where the server of ``upstream``'s node listens."""
        host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
        return f"{scheme}://{host}:{self.port}"


def forwarded(scope: Scope) -> bool:
    """Whether another server handed this request here (it is never handed on again)."""
    return any(key == _FORWARDED_BY_RAW for key, _ in scope["headers"])


def peer_headers(scope: Scope, node: str, *, websocket: bool = False) -> list[tuple[str, str]]:
    """The caller's headers for the workload's server: its credential included (that server
    checks it again), ``Host`` kept for HTTP (its same-origin rule sees what the browser
    sent), and the hop's marks."""
    drop = _NEVER_WS if websocket else _NEVER
    headers: list[tuple[str, str]] = []
    prior = ""
    for raw_key, raw_value in scope["headers"]:
        key, value = raw_key.decode("latin-1").lower(), raw_value.decode("latin-1")
        if key == "x-forwarded-for":
            prior = value
        elif key not in drop and key != CSRF_HEADER.lower():
            headers.append((key, value))
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", f"{prior}, {client[0]}" if prior else client[0]))
    headers.append((CSRF_HEADER, "1"))
    headers.append((FORWARDED_BY, node or "?"))
    return headers
