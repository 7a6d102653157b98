"""The WebSocket protocol of ``virtuai port-forward`` (one WebSocket per TCP connection).

Shared by the server and the CLI (standard library only).  Routes:
``/api/v1/jobs/{id}/port-forward/ws?port=P&task=I`` and
``/api/v1/vcs/{name}/port-forward/ws?port=P&node=I``.  The server authorises the
caller and connects to the port *before* it accepts the handshake, so a refusal
(401, 404 for another tenant's job, 409 for a job that is not running, 502 when
nothing listens there) is an ordinary HTTP answer with the API's
``{code, message, field}`` body.  Once accepted, both sides exchange binary
messages whose first byte is a channel (as in ``execwire``):

- ``DATA``: bytes of the TCP stream, in order;
- ``EOF``: the sender will send no more data (a TCP half-close, ``shutdown(SHUT_WR)``);
  the other direction goes on until it ends too;
- ``ERROR`` (server to client): ``{"message": "..."}``, then the server closes.

The WebSocket is closed once both directions have ended (or on an error); a
client that goes away resets the connection to the port.
"""

from __future__ import annotations

import json

DATA = 0
EOF = 1
ERROR = 2

CHUNK = 64 * 1024
MAX_MESSAGE = 1024 * 1024


def frame(channel: int, payload: bytes = b"") -> bytes:
    return bytes((channel,)) + payload


def error_frame(message: str) -> bytes:
    return frame(ERROR, json.dumps({"message": message}).encode())


def split(message: bytes) -> tuple[int, bytes]:
    """The channel and payload of a binary message (``ValueError`` if it is empty)."""
    if not message:
        raise ValueError("an empty message has no channel")
    return message[0], message[1:]
