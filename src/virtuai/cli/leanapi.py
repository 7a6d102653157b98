"""Plain HTTP and the CLI config for the lean entry point (``cli/lean.py``): the same
words as ``cli.client`` and ``cli.config`` for what they do.

Only modules that are built into the interpreter or already loaded at start-up
are imported here (``os``, ``_socket``, ``_json`` through ``cli.leanjson``): the
``socket`` module imports ``enum`` and ``selectors``, ``urllib.parse`` and
``pathlib`` import ``re`` and more, ``http.client`` imports ``ssl`` and
``email``; together they cost more CPU than the rest of a ``virtuai submit``.
Whatever this module does not read plainly (an ``https://`` or IPv6 URL, YAML
beyond ``key: value`` lines) is left to the full app.

``Fallback`` means "the full Typer app takes this call" and is raised only
before any request is sent; ``Failed`` is a request that failed, printed as the
full app prints its errors.
"""

from __future__ import annotations

import _socket
import os

from virtuai import __version__
from virtuai.cli import leanjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

DEFAULT_URL = "http://127.0.0.1:8642"
TIMEOUT_S = 30.0
# What may not appear in a value for PyYAML to read it as the same plain string.
_YAML_SPECIAL = frozenset("'\"#[]{}&*!|>%@`")
# Plain scalars that YAML 1.1 (PyYAML) reads as booleans or null, not text.
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
# What urllib.parse.quote_plus leaves as it is.
_QUERY_SAFE = _HOST_CHARS | frozenset("_~")


class Fallback(Exception):
    """Not for this path: the full Typer app takes the call, nothing was sent yet."""


class Failed(Exception):
    """A request failed; ``message`` is printed as the full app prints it."""

    def __init__(self, message: str, field: str | None = None, *, unreachable: bool = False):
        super().__init__(message)
        self.message = message
        self.field = field
        self.unreachable = unreachable


def config_path(environ: Mapping[str, str]) -> str:
    """``clientconfig.cli_config_path``, as a string (``pathlib`` costs an import)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    root = base if base.startswith("/") else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(root, "virtuai", "cli.yaml")


def config_path_text(environ: Mapping[str, str]) -> str:
    """The path as the full app prints it (``pathlib`` spelling: no ``//`` or ``/./``)."""
    from pathlib import Path

    return str(Path(config_path(environ)))


def read_simple_config(path: str) -> dict[str, str]:
    """The file as ``virtuai up`` writes it (``key: value`` lines); anything fancier -> Fallback.

    Reading YAML would cost an import of PyYAML (~30 ms); the full app reads
    whatever YAML a user wrote, with its own errors.  A line is taken only when
    PyYAML would read the same text from it.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        raise Fallback from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, colon, rest = line.partition(":")
        value = rest.strip(" ")
        if not (colon and key.isascii() and key.isalpha() and key.islower()) or key in found:
            raise Fallback
        if not rest.startswith(" ") or "\t" in line:  # `key:value` is one string to YAML
            raise Fallback
        if not _plain_text(value):
            raise Fallback
        found[key] = value
    if set(found) - {"url", "token"}:
        raise Fallback
    return found


def _plain_text(value: str) -> bool:
    """A YAML plain scalar that PyYAML reads as this very string."""
    return (
        value[:1].isascii()
        and value[:1].isalpha()
        and value.lower() not in _YAML_WORDS
        and not any(c in _YAML_SPECIAL for c in value)
        and ": " not in value
        and not value.endswith(":")
        and value.isprintable()
    )


def split_urls(text: str) -> list[str]:
    return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]


def server_address(url: str) -> tuple[str, int]:
    """``http://host[:port]`` as (host, port); any other URL is the full app's (Fallback)."""
    if not url.startswith("http://"):
        raise Fallback  # https (SSL), odd URLs and their errors: the full app
    host, colon, port = url[7:].partition(":")
    if not all(c in _HOST_CHARS for c in host) or not host[:1].isalnum():
        raise Fallback
    if not all(0 < len(label) < 64 for label in host.removesuffix(".").split(".")):
        raise Fallback  # what the IDNA codec refuses
    if colon and not (0 < len(port) <= 5 and port.isascii() and port.isdigit()):
        raise Fallback
    if colon and not 0 < int(port) <= 65535:
        raise Fallback
    return host.lower(), int(port) if colon else 80


class Api:
    """JSON over HTTP/1.1 to the first server that answers, as ``cli.client.Client``."""

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
        if not urls:
            raise Fallback
        for url in urls:
            server_address(url)
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
        target = path + ("?" + query_string(query) if query else "")
        headers = [f"User-Agent: virtuai-cli/{__version__}", "Accept: application/json"]
        if self.token:
            headers.append(f"Authorization: Bearer {self.token}")
        payload = b""
        if body is not None:
            payload = leanjson.dumps(body).encode("utf-8")
            headers.append("Content-Type: application/json")
        status, reason, raw = self._send(method, target, payload, headers)
        url = self.urls[self._current]
        if not 200 <= status < 300:
            raise self._error(status, reason, raw, method, path)
        if status == 204 or not raw:
            return None
        try:
            return leanjson.loads(raw)
        except ValueError:
            raise Failed(
                f"the server at {url} answered {method} {path} with something "
                "that is not JSON: is it a virtuai server?"
            ) from None

    def _send(
        self, method: str, target: str, payload: bytes, headers: list[str]
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
            except NotConnected:
                # As httpx's ConnectError and ConnectTimeout in cli.client: nothing was sent.
                if attempt == len(order) - 1:
                    raise Failed(unreachable_message(self.urls), unreachable=True) from None
            except TimeoutError:
                raise Failed(
                    f"the virtuai server at {url} did not answer within {TIMEOUT_S:g} s",
                    unreachable=True,
                ) from None
            except OSError as exc:
                raise Failed(f"talking to the virtuai server at {url} failed: {exc}") from None
            except ValueError as exc:
                raise Failed(f"talking to the virtuai server at {url} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _error(self, status: int, reason: str, raw: bytes, method: str, path: str) -> Failed:
        message: str | None = None
        field: str | None = None
        try:
            data = leanjson.loads(raw)
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
                f"{message} (no token is configured for {self.urls[0]}: `virtuai login URL` "
                f"with your token, or set VIRTUAI_TOKEN (`virtuai up` writes "
                f"{config_path_text(os.environ)} for its administrator at first start))"
            )
        return Failed(message, field)


def query_string(query: Mapping[str, object]) -> str:
    """``urllib.parse.urlencode(query)``; that module is imported only for unusual text."""
    pairs = [(key, str(value)) for key, value in query.items()]
    if all(c in _QUERY_SAFE for pair in pairs for text in pair for c in text):
        return "&".join(f"{key}={value}" for key, value in pairs)
    from urllib.parse import urlencode

    return urlencode(pairs)


def http_exchange(
    url: str, method: str, target: str, payload: bytes, headers: Sequence[str]
) -> tuple[int, str, bytes]:
    """One HTTP/1.1 request on its own connection: (status, reason, body).

    The request goes out in one ``send`` (headers and body together, so neither
    Nagle's algorithm nor a delayed ACK holds a second segment), and the answer
    is taken as soon as its ``Content-Length`` is in, without waiting for the
    server to close.
    """
    host, port = server_address(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {url[7:]}", "Connection: close", *headers]
    lines.append(f"Content-Length: {len(payload)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    sock = _connect(host, port)
    try:
        sock.sendall(request)
        return _answer(sock)
    finally:
        sock.close()


class NotConnected(Exception):
    """No connection was made (unknown name, refused, unreachable, no answer in time):
    nothing was sent, so the next server may take the request."""


def _connect(host: str, port: int) -> _socket.socket:
    """``socket.create_connection((host, port), TIMEOUT_S)`` on ``_socket``: each address
    in turn; ``NotConnected`` if none takes the connection."""
    try:
        # The name as bytes: given text, getaddrinfo encodes it with the IDNA codec, whose
        # module imports re, stringprep and unicodedata (server_address admits ASCII only).
        addresses = _socket.getaddrinfo(host.encode("ascii"), port, 0, _socket.SOCK_STREAM)
    except OSError as exc:
        raise NotConnected(str(exc)) from None
    for family, kind, proto, _name, address in addresses:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(TIMEOUT_S)
            sock.connect(address)
        except OSError:
            sock.close()
            continue
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        return sock
    raise NotConnected(f"no address of {host} took the connection")


def _answer(sock: _socket.socket) -> tuple[int, str, bytes]:
    data = b""
    status, reason, chunked = 0, "", False
    length: int | None = None
    head_end = -1
    while True:
        chunk = sock.recv(65536)
        data += chunk
        if head_end < 0:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                status, reason, fields = _head(data[:head_end])
                chunked = fields.get("transfer-encoding", "").lower() == "chunked"
                if "content-length" in fields and not chunked:
                    length = int(fields["content-length"])
        if not chunk or (length is not None and len(data) - head_end - 4 >= length):
            break
    if head_end < 0:
        raise ValueError("the connection closed before a whole answer came")
    body = data[head_end + 4 :]
    if length is not None:
        body = body[:length]
    elif chunked:
        body = _dechunked(body)
    return status, reason, body


def _head(head: bytes) -> tuple[int, str, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not (code.isascii() and code.isdigit()):
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    fields = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(code), reason, fields


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
