"""A small httpx wrapper for the REST API: JSON in, JSON out, one exception out.

Every failure, whether the server refused the request (its ``{"code",
"message", "field"}`` body is kept), could not be reached, or answered
something that is not the API, becomes an ``ApiError``; httpx's own exceptions
are converted in exactly one place (``_mapped_errors``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from virtuai import __version__
from virtuai.cli.config import Connection, load_connection, missing_token_hint
from virtuai.errors import VirtuaiError

DEFAULT_TIMEOUT_S = 30.0
JsonObject = dict[str, Any]
Params = Mapping[str, str | int | float | None]


class ApiError(VirtuaiError):
    """The server refused a request, or could not be talked to.

    ``code`` and ``field`` are the server's when it sent them; ``status`` is the
    HTTP status, ``None`` when no answer came.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        field: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.code = code
        self.status = status


class ServerUnreachableError(ApiError):
    """No HTTP answer came: nothing listens there, or it did not answer in time."""


def segment(value: str | int) -> str:
    """One URL path segment, quoted."""
    return quote(str(value), safe="")


class Client:
    def __init__(self, connection: Connection, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.connection = connection
        self._timeout = timeout
        headers = {"User-Agent": f"virtuai-cli/{__version__}", "Accept": "application/json"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self._http = httpx.Client(base_url=connection.url, headers=headers, timeout=timeout)
        self._server = 0  # index in connection.servers of the one in use

    @classmethod
    def from_environment(cls) -> Client:
        """A client for the server that the environment and the config file name."""
        return cls(load_connection())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # The calls the commands use, checked for the JSON shape they expect.
    def get_object(self, path: str, params: Params | None = None) -> JsonObject:
        return _expect_object(self.request("GET", path, params=params), path)

    def get_list(self, path: str, params: Params | None = None) -> list[JsonObject]:
        return _expect_list(self.request("GET", path, params=params), path)

    def post_object(self, path: str, body: Any = None) -> JsonObject:
        return _expect_object(self.request("POST", path, body=body), path)

    def post_list(self, path: str, body: Any = None) -> list[JsonObject]:
        return _expect_list(self.request("POST", path, body=body), path)

    def put_object(self, path: str, body: Any) -> JsonObject:
        return _expect_object(self.request("PUT", path, body=body), path)

    def request(
        self, method: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        servers = self.connection.servers
        for attempt in range(len(servers)):
            try:
                with self._mapped_errors():
                    if body is None:
                        response = self._http.request(method, path, params=query)
                    else:
                        response = self._http.request(method, path, params=query, json=body)
                break
            except ServerUnreachableError as exc:
                # Nothing answered there, so nothing was done: the next server may answer.
                if exc.code != "unreachable" or attempt == len(servers) - 1:
                    raise
                self._server = (self._server + 1) % len(servers)
                self._http.base_url = httpx.URL(servers[self._server])
        if not response.is_success:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"the server at {self.connection.url} answered {method} {path} with something "
                "that is not JSON: is it a virtuai server?",
                code="bad_response",
                status=response.status_code,
            ) from None

    @contextmanager
    def stream_lines(
        self, method: str, path: str, *, params: Params | None = None, body: Any = None
    ) -> Iterator[Iterator[str]]:
        """The answer's lines as they come (no read timeout: a command may be quiet long)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        timeout = httpx.Timeout(self._timeout, read=None)
        with (
            self._mapped_errors(),
            self._http.stream(method, path, params=query, json=body, timeout=timeout) as response,
        ):
            if not response.is_success:
                response.read()
                raise self._error(response)
            yield response.iter_lines()

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        url = self.connection.servers[self._server]
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout):
            everywhere = " or ".join(self.connection.servers)
            raise ServerUnreachableError(
                f"cannot reach the virtuai server at {everywhere}: is `virtuai up` running?",
                code="unreachable",
            ) from None
        except httpx.TimeoutException:
            raise ServerUnreachableError(
                f"the virtuai server at {url} did not answer within {self._timeout:g} s",
                code="timeout",
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ApiError(
                f"talking to the virtuai server at {url} failed: {exc}", code="transport"
            ) from None

    def _error(self, response: httpx.Response) -> ApiError:
        code, field = f"http_{response.status_code}", None
        message = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            if isinstance(body.get("message"), str):
                message = body["message"]
                code = body["code"] if isinstance(body.get("code"), str) else code
                field = body["field"] if isinstance(body.get("field"), str) else None
            elif "detail" in body:  # the framework's own shape, should one slip through
                message, field = _detail(body["detail"])
        if not message:
            request = response.request
            message = (
                f"the server answered {response.status_code} {response.reason_phrase} "
                f"to {request.method} {request.url.path}"
            )
        if response.status_code == 401 and not self.connection.token:
            message = f"{message} ({missing_token_hint(self.connection)})"
        return ApiError(message, code=code, field=field, status=response.status_code)


def _detail(detail: Any) -> tuple[str, str | None]:
    """FastAPI's ``{"detail": "text"}`` or ``{"detail": [{"loc", "msg"}, ...]}``."""
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(part) for part in first.get("loc", [])]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        return str(first.get("msg", "invalid request")), ".".join(loc) or None
    return str(detail), None


def _expect_object(data: Any, path: str) -> JsonObject:
    if not isinstance(data, dict):
        raise ApiError(f"unexpected answer from the server to {path}", code="bad_response")
    return data


def _expect_list(data: Any, path: str) -> list[JsonObject]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ApiError(f"unexpected answer from the server to {path}", code="bad_response")
    return data
