"""The WebSocket protocol of ``virtuai vc exec`` (``/api/v1/vcs/{name}/exec/ws``).

Shared by the server and the CLI (standard library only).  After the handshake
the client sends one text message, the start request::

    {"command": [...], "timeout": N | null, "stdin": bool, "tty": bool,
     "rows": R, "cols": C, "term": "xterm-256color"}

then both sides exchange binary messages whose first byte is a channel, as in
Kubernetes' ``v4.channel.k8s.io``:

- ``STDIN`` (client to server): bytes for the command's standard input; an
  empty payload closes it (EOF).
- ``STDOUT``, ``STDERR`` (server to client): the command's output as it comes
  (with a terminal everything comes on ``STDOUT``).
- ``RESIZE`` (client to server): ``{"rows": R, "cols": C}``, the terminal's new size.
- ``STATUS`` (server to client, last): ``{"exit_code": N, "message": "..."}``;
  the server then closes the connection.

Nothing bounds the amount streamed: WebSocket messages are not HTTP request
bodies (``limits.max_body`` does not apply); a single message is bounded by
``MAX_MESSAGE`` and the sides send at most ``CHUNK`` bytes at a time.
"""

from __future__ import annotations

import json
from typing import Any

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4

CHUNK = 64 * 1024
MAX_MESSAGE = 1024 * 1024


def frame(channel: int, payload: bytes = b"") -> bytes:
    return bytes((channel,)) + payload


def json_frame(channel: int, value: dict[str, Any]) -> bytes:
    return frame(channel, json.dumps(value).encode())


def split(message: bytes) -> tuple[int, bytes]:
    """The channel and payload of a binary message (``ValueError`` if it is empty)."""
    if not message:
        raise ValueError("an empty message has no channel")
    return message[0], message[1:]
