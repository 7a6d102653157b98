"""The HTTP wrapper: what it sends, and how every failure becomes one ApiError."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cli_fakes import TOKEN, FakeApi, Raw

from virtuai.cli.client import ApiError, Client, ServerUnreachableError
from virtuai.cli.config import Connection


def connect(url: str, token: str | None = TOKEN) -> Client:
    return Client(
        Connection(
            url=url,
            token=token,
            url_source="test",
            token_source="test",
            config_path=Path("/nonexistent/cli.yaml"),
        ),
        timeout=5,
    )


def test_sends_the_token_and_json(api: FakeApi) -> None:
    api.on("POST", "/api/v1/things", {"ok": True}, status=201)
    with connect(api.url) as client:
        assert client.post_object("/api/v1/things", {"a": 1}) == {"ok": True}
    (request,) = api.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == {"a": 1}


def test_no_token_no_header(api: FakeApi) -> None:
    api.on("GET", "/x", {})
    with connect(api.url, token=None) as client:
        client.get_object("/x")
    assert "authorization" not in api.requests[0].headers


def test_none_query_parameters_are_left_out(api: FakeApi) -> None:
    api.on("GET", "/api/v1/jobs", [])
    with connect(api.url) as client:
        client.get_list("/api/v1/jobs", {"tenant": "ml", "state": None, "limit": 5})
    assert api.requests[0].query == {"tenant": "ml", "limit": "5"}


def test_keeps_the_servers_code_message_and_field(api: FakeApi) -> None:
    error = {"code": "invalid", "message": "memory: cannot read 'x'", "field": "memory"}
    api.on("POST", "/api/v1/jobs", (422, error))
    with connect(api.url) as client, pytest.raises(ApiError) as caught:
        client.post_object("/api/v1/jobs", {})
    assert (caught.value.code, caught.value.field, caught.value.status) == (
        "invalid",
        "memory",
        422,
    )
    assert caught.value.message == "memory: cannot read 'x'"


def test_understands_the_frameworks_own_error_shape(api: FakeApi) -> None:
    detail = {"detail": [{"loc": ["body", "resources", "gpu"], "msg": "too big"}]}
    api.on("POST", "/x", (422, detail))
    with connect(api.url) as client, pytest.raises(ApiError) as caught:
        client.post_object("/x", {})
    assert (caught.value.message, caught.value.field) == ("too big", "resources.gpu")


def test_an_error_that_is_not_json_says_what_happened(api: FakeApi) -> None:
    api.on("GET", "/x", Raw(502, "<html>Bad gateway</html>", "text/html"))
    with connect(api.url) as client, pytest.raises(ApiError, match=r"502 Bad Gateway to GET /x"):
        client.get_object("/x")


def test_a_success_that_is_not_json_is_an_error(api: FakeApi) -> None:
    api.on("GET", "/x", Raw(200, "hello"))
    with connect(api.url) as client, pytest.raises(ApiError, match="not JSON"):
        client.get_object("/x")


def test_an_unexpected_shape_is_an_error(api: FakeApi) -> None:
    api.on("GET", "/x", [1, 2])
    with connect(api.url) as client, pytest.raises(ApiError, match="unexpected answer"):
        client.get_list("/x")


def test_401_without_a_token_says_how_to_get_one(api: FakeApi) -> None:
    api.on("GET", "/x", (401, {"code": "unauthenticated", "message": "no token", "field": None}))
    with connect(api.url, token=None) as client, pytest.raises(ApiError) as caught:
        client.get_object("/x")
    assert "no token (no token is configured" in caught.value.message
    assert "VIRTUAI_TOKEN" in caught.value.message


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with connect(url) as client, pytest.raises(ServerUnreachableError) as caught:
        client.get_object("/healthz")
    assert caught.value.message == (
        f"cannot reach the virtuai server at {url}: is `virtuai up` running?"
    )
