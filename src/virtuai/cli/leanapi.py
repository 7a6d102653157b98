"""Plain HTTP and the CLI config for the lean entry point (``cli/lean.py``): standard
library only, the same words as ``cli.client`` and ``cli.config`` for what they do.

``Fallback`` means "the full Typer app takes this call" and is raised only
before any request is sent; ``Failed`` is a request that failed, printed as the
full app prints its errors.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from virtuai import __version__

DEFAULT_URL = "http://127.0.0.1:8642"
TIMEOUT_S = 30.0
SIMPLE_LINE = re.compile(r"^([a-z]+):[ \t]*([^'\"#\[\]{}&*!|>%@`]*?)[ \t]*$")


class Fallback(Exception):
    """Not for this path: the full Typer app takes the call, nothing was sent yet."""


class Failed(Exception):
    """A request failed; ``message`` is printed as the full app prints it."""

    def __init__(self, message: str, field: str | None = None, *, unreachable: bool = False):
        super().__init__(message)
        self.message = message
        self.field = field
        self.unreachable = unreachable


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "virtuai" / "cli.yaml"


def read_simple_config(path: Path) -> dict[str, str]:
    """The file as ``virtuai up`` writes it (``key: value`` lines); anything fancier -> Fallback.

    Reading YAML would cost an import of PyYAML (~30 ms); the full app reads
    whatever YAML a user wrote, with its own errors.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        raise Fallback from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = SIMPLE_LINE.match(line)
        if match is None or match.group(1) in found or not match.group(2):
            raise Fallback
        found[match.group(1)] = match.group(2)
    if set(found) - {"url", "token"}:
        raise Fallback
    return found


def split_urls(text: str) -> list[str]:
    return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]


class Api:
    """JSON over ``http.client`` to the first server that answers, as ``cli.client.Client``."""

    def __init__(self, urls: list[str], token: str | None) -> None:
        self.urls = urls
        self.token = token
        self._current = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Api:
        env = os.environ if environ is None else environ
        env_url = env.get("VIRTUAI_URL", "").strip()
        env_token = env.get("VIRTUAI_TOKEN", "").strip()
        file = {} if env_url and env_token else read_simple_config(config_path(env))
        urls = split_urls(env_url or file.get("url") or DEFAULT_URL)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
                raise Fallback  # https (SSL), odd URLs and their errors: the full app
        token = env_token or None
        if token is None and file.get("token"):
            file_urls = split_urls(file["url"]) if file.get("url") else None
            if file_urls is None or file_urls == urls:
                token = file["token"]
        return cls(urls, token)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        body: object = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        target = path + ("?" + urlencode(query) if query else "")
        headers = {"User-Agent": f"virtuai-cli/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        status, reason, raw = self._send(method, target, payload, headers)
        url = self.urls[self._current]
        if not 200 <= status < 300:
            raise self._error(status, reason, raw, method, path)
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Failed(
                f"the server at {url} answered {method} {path} with something "
                "that is not JSON: is it a virtuai server?"
            ) from None

    def _send(
        self, method: str, target: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        # Try each server in turn while none answers; an answer, even an error, is final.
        first = self._current
        order = [*range(first, len(self.urls)), *range(first)]
        for attempt, index in enumerate(order):
            url = self.urls[index]
            try:
                answer = http_exchange(url, method, target, payload, headers)
                self._current = index
                return answer
            except TimeoutError:
                raise Failed(
                    f"the virtuai server at {url} did not answer within {TIMEOUT_S:g} s",
                    unreachable=True,
                ) from None
            except OSError as exc:
                if not _not_connected(exc):
                    raise Failed(f"talking to the virtuai server at {url} failed: {exc}") from None
                if attempt == len(order) - 1:
                    raise Failed(unreachable_message(self.urls), unreachable=True) from None
            except ValueError as exc:
                raise Failed(f"talking to the virtuai server at {url} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _error(self, status: int, reason: str, raw: bytes, method: str, path: str) -> Failed:
        message: str | None = None
        field: str | None = None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("message"), str):
                message = data["message"]
                field = data["field"] if isinstance(data.get("field"), str) else None
            elif "detail" in data:
                message, field = _detail(data["detail"])
        if not message:
            message = f"the server answered {status} {reason} to {method} {path}"
        if status == 401 and not self.token:
            message = (
                f"{message} (no token is configured for {self.urls[0]}: set VIRTUAI_TOKEN, or "
                f"start the server once with `virtuai up` to write {config_path(os.environ)})"
            )
        return Failed(message, field)


def http_exchange(
    url: str, method: str, target: str, payload: bytes | None, headers: Mapping[str, str]
) -> tuple[int, str, bytes]:
    """One HTTP/1.1 request on its own connection: (status, reason, body).

    A plain socket rather than ``http.client``, which imports ``ssl`` and the
    ``email`` package (20-30 ms) to parse headers this client never needs.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(payload or b'')}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (payload or b"")
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("the connection closed before a whole answer came")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunked(body)
    elif "content-length" in fields:
        body = body[: int(fields["content-length"])]
    return int(code), reason, body


def _dechunked(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


def unreachable_message(urls: Sequence[str]) -> str:
    """The same words as ``cli.client``: one server, or every server tried."""
    return f"cannot reach the virtuai server at {' or '.join(urls)}: is `virtuai up` running?"


def _not_connected(exc: OSError) -> bool:
    """No server there (refused, unreachable, unknown host): the next one may answer."""
    return isinstance(exc, ConnectionRefusedError | socket.gaierror) or exc.errno in (
        101,  # ENETUNREACH
        113,  # EHOSTUNREACH
        111,  # ECONNREFUSED
    )


def _detail(detail: Any) -> tuple[str, str | None]:
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(part) for part in first.get("loc", [])]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        return str(first.get("msg", "invalid request")), ".".join(loc) or None
    return str(detail), None


def expect_object(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Failed(f"unexpected answer from the server to {path}")
    return data


def expect_list(data: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise Failed(f"unexpected answer from the server to {path}")
    return data
