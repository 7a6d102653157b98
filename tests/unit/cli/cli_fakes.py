"""Fakes for the CLI tests: a real, tiny HTTP server answering canned JSON, a fake clock,
and a runner.

No mock of httpx: the CLI's requests go through a socket to ``FakeApi``,
which records them and answers what each test told it to.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from typer.testing import CliRunner, Result

from virtuai.cli.clock import Clock
from virtuai.cli.main import app

TOKEN = "vai_test_token"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Raw:
    """A reply that is not JSON."""

    status: int
    text: str
    content_type: str = "text/plain"


Reply = tuple[int, Any] | Raw
Responder = Callable[[Request], Reply]


@dataclass
class FakeApi:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    routes: dict[tuple[str, str], list[Reply] | Responder] = field(default_factory=dict)

    def on(self, method: str, path: str, *replies: Reply | Any, status: int = 200) -> None:
        """Answer ``method path`` with ``replies`` in turn (the last one repeats).

        A reply is a JSON body (sent with ``status``), a ``(status, body)`` pair, or ``Raw``.
        """
        self.routes[(method, path)] = [
            r if isinstance(r, Raw) or _is_pair(r) else (status, r) for r in replies
        ]

    def respond(self, method: str, path: str, responder: Responder) -> None:
        self.routes[(method, path)] = responder

    def reply_to(self, request: Request) -> Reply:
        route = self.routes.get((request.method, request.path))
        if route is None:
            return 404, {"code": "not_found", "message": f"no route {request.path}", "field": None}
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int)


def handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command,
                path=parts.path,
                query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            api.requests.append(request)
            reply = api.reply_to(request)
            if isinstance(reply, Raw):
                status, payload, ctype = reply.status, reply.text.encode(), reply.content_type
            else:
                status, payload = reply[0], json.dumps(reply[1]).encode()
                ctype = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class FakeClock(Clock):
    """Time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(args: list[str], clock: Clock | None = None, stdin: str | None = None) -> Result:
    """Run ``virtuai args`` in-process (stderr kept apart from stdout)."""
    return CliRunner().invoke(app, args, obj=clock, input=stdin)


JOB = {
    "id": 7,
    "name": "train",
    "tenant": "ml",
    "user": "alice",
    "state": "running",
    "reason": "",
    "exit_code": None,
    "command": ["python", "-c", "print(1)"],
    "resources": {"cpu": 0.5, "memory": 2**31, "gpu": 1},
    "tasks": 2,
    "time_limit": 3600,
    "priority": "normal",
    "restart_count": 0,
    "queue_position": None,
    "placement": [{"index": 0, "node": "node-a", "gpu_indices": [0]}],
    "submitted_at": "2026-05-01T10:00:00Z",
    "started_at": "2026-05-01T10:00:05Z",
    "finished_at": None,
}


def job(**changes: Any) -> dict[str, Any]:
    return {**JOB, **changes}


def plain(text: str) -> str:
    """Typer's boxed error message as one line: no borders, single spaces."""
    return " ".join(text.translate(str.maketrans("", "", "│╭╮╰╯─")).split())


def serve(api: FakeApi, port: int = 0) -> ThreadingHTTPServer:
    """Serve ``api`` on 127.0.0.1 (a free port unless given) in a thread; ``stop`` it after."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
