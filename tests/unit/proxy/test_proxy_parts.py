"""The proxy's pure parts: paths, same-origin rule, and what crosses to and from a workload."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from virtuai.api.errors import status_of
from virtuai.control.notebooks import Upstream
from virtuai.errors import Forbidden
from virtuai.proxy.answers import STATUS, broken_off
from virtuai.proxy.auth import SessionCache, check_same_origin, credential, plain_credential
from virtuai.proxy.headers import (
    NOT_UPSTREAM,
    RequestHead,
    downstream_headers,
    upstream_headers,
)
from virtuai.proxy.peers import Peers, forwarded, peer_headers
from virtuai.proxy.routes import Access, Route, RouteTable, Suspects, Target, parse_target
from virtuai.services.access import Caller
from virtuai.services.tokencache import GENERATION


def _connection(headers: dict[str, str], method: str = "GET") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection(
        {"type": "http", "method": method, "headers": raw, "path": "/", "client": ("10.0.0.9", 1)}
    )


def test_paths_name_a_route() -> None:
    target = parse_target("/user/alice/lab/api/kernels")
    assert target is not None
    assert (target.kind, target.owner, target.name, target.rest) == (
        "user",
        "alice",
        "lab",
        "/api/kernels",
    )
    assert target.prefix == "/user/alice/lab/"
    bare = parse_target("/user/alice/lab")
    assert bare is not None and bare.rest == ""
    assert parse_target("/svc/physics/llm/v1/chat") is not None
    for path in ("/user/alice", "/user/Alice/lab/", "/user/../x/", "/api/v1/jobs", "/users/a/b/"):
        assert parse_target(path) is None, path


def test_a_cookie_request_that_changes_something_must_be_same_origin() -> None:
    check_same_origin(_connection({"host": "h:1"}), "GET")
    check_same_origin(_connection({"host": "h:1", "origin": "http://h:1"}), "POST")
    check_same_origin(_connection({"host": "h:1", "x-virtuai-csrf": "1"}), "DELETE")
    for headers in ({"host": "h:1"}, {"host": "h:1", "origin": "http://evil:1"}):
        with pytest.raises(Forbidden):
            check_same_origin(_connection(headers), "POST")
    with pytest.raises(Forbidden):  # a WebSocket (method None) from another site
        check_same_origin(_connection({"host": "h:1", "origin": "http://evil"}), None)


def test_credentials_bearer_first_then_cookie_other_schemes_ignored() -> None:
    assert credential(_connection({"authorization": "Bearer vai_x"})) is not None
    jupyter = _connection({"authorization": "token abc", "cookie": "virtuai_session=vai_y"})
    found = credential(jupyter)
    assert found is not None and found[0] == "vai_y"
    assert credential(_connection({"authorization": "token abc"})) is None


def test_the_fast_paths_reading_of_a_request_agrees_with_the_asgi_paths() -> None:
    cases = [
        {"authorization": "Bearer vai_x"},
        {"authorization": "token abc", "cookie": "a=1; virtuai_session=vai_y; b=2"},
        {"authorization": "token abc"},
        {"cookie": "a=1"},
        {"content-length": "0", "authorization": "Bearer vai_z"},  # no body after all
        {},
    ]
    for headers in cases:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        assert plain_credential(raw) == (True, credential(_connection(headers))), headers
    # A body, an upgrade, or a request another server handed over: the ASGI path's.
    for odd in (
        {"content-length": "3"},
        {"transfer-encoding": "chunked"},
        {"upgrade": "websocket", "connection": "upgrade"},
        {"x-virtuai-forwarded-by": "n2"},
    ):
        raw = [(k.encode(), v.encode()) for k, v in {**odd, "authorization": "Bearer v"}.items()]
        assert plain_credential(raw)[0] is False, odd


def test_the_callers_credentials_never_reach_the_workload() -> None:
    connection = _connection(
        {
            "host": "h:1",
            "authorization": "Bearer vai_secret",
            "cookie": "virtuai_session=vai_secret; _xsrf=abc",
            "x-virtuai-notebook-secret": "forged",
            "connection": "keep-alive",
        }
    )
    route = Route(1, Access.OWNER, 1, "t", "running", "")
    headers = upstream_headers(
        connection, connection.scope, Upstream("127.0.0.1", 1, "real"), route, NOT_UPSTREAM
    )
    flat = "\n".join(f"{k}: {v}" for k, v in headers)
    assert "vai_secret" not in flat
    assert "forged" not in flat
    assert ("cookie", "_xsrf=abc") in headers
    assert ("X-Virtuai-Notebook-Secret", "real") in headers
    assert ("X-Virtuai-Auth", "bearer") in headers
    assert ("x-forwarded-for", "10.0.0.9") in headers
    assert not any(k == "connection" for k, _ in headers)


def test_the_request_head_passes_on_only_what_the_workload_may_see() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "headers": [
            (b"host", b"h:1"),
            (b"authorization", b"Bearer vai_secret"),
            (b"cookie", b"virtuai_session=vai_secret; _xsrf=abc"),
            (b"x-virtuai-notebook-secret", b"forged"),
            (b"connection", b"keep-alive"),
            (b"expect", b"100-continue"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"5"),
        ],
        "client": ("10.0.0.9", 5),
    }
    head = RequestHead(scope, "/predict?x=1")
    assert head.chunked and head.has_body
    text = head.to(Upstream("127.0.0.1", 1, "real")).decode()
    assert text.startswith("POST /predict?x=1 HTTP/1.1\r\n")
    assert text.endswith("\r\n\r\n")
    lines = text.split("\r\n")
    assert "vai_secret" not in text and "forged" not in text
    assert "cookie: _xsrf=abc" in lines
    assert "X-Virtuai-Notebook-Secret: real" in lines
    assert "X-Virtuai-Auth: bearer" in lines
    assert "x-forwarded-for: 10.0.0.1, 10.0.0.9" in lines
    assert "transfer-encoding: chunked" in lines  # both framings given: chunked wins
    assert not any(line.startswith(("connection", "expect", "content-length")) for line in lines)
    # An HTTP/1.0 caller sent no Host: HTTP/1.1 needs one.
    bare = RequestHead({"method": "GET", "headers": []}, "/").to(Upstream("::1", 8, "s"))
    assert b"host: [::1]:8\r\n" in bare


def test_a_workload_cannot_set_the_session_cookie() -> None:
    kept = downstream_headers(
        [
            (b"Set-Cookie", b"virtuai_session=stolen; Path=/"),
            (b"Set-Cookie", b"_xsrf=1; Path=/user/alice/lab/"),
            # A browser trims the name (RFC 6265 5.2): this one sets the session too.
            (b"set-cookie", b" virtuai_session\t= stolen"),
            (b"Set-Cookie", b"virtuai_session"),  # no "=": a nameless cookie, dropped anyway
            # Other names, however alike, are the workload's own (names are case-sensitive).
            (b"Set-Cookie", b"Virtuai_Session=1"),
            (b"Set-Cookie", b"virtuai_session_x=1"),
            (b"Set-Cookie", b"k=virtuai_session=1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Type", b"text/html"),
        ]
    )
    assert kept == [
        (b"set-cookie", b"_xsrf=1; Path=/user/alice/lab/"),
        (b"set-cookie", b"Virtuai_Session=1"),
        (b"set-cookie", b"virtuai_session_x=1"),
        (b"set-cookie", b"k=virtuai_session=1"),
        (b"content-type", b"text/html"),
    ]


def test_routes_are_cached_then_served_stale_while_refreshed_then_forgotten(
    session_factory: sessionmaker[Session],
) -> None:
    answers: list[Route | None] = [
        Route(1, Access.OWNER, 1, "t", "running", "", (Upstream("127.0.0.1", 9, "s"),))
    ]

    def resolve(_session: Session, _target: Target, _key: bytes) -> Route | None:
        return answers[-1]

    table = RouteTable(session_factory, b"k", ttl_s=0.2, stale_s=0.6, resolvers={"user": resolve})
    target = parse_target("/user/alice/lab/")
    assert target is not None
    assert table.cached(target) == (False, None, False)
    route = table.lookup(target)
    assert table.cached(target) == (True, route, False)
    time.sleep(0.3)
    assert table.cached(target) == (True, route, True)  # used, and read again meanwhile
    answers.append(None)  # the notebook ended
    assert table.lookup(target) is None
    assert table.cached(target) == (False, None, False)
    answers.append(route)
    table.lookup(target)
    time.sleep(0.7)
    assert table.cached(target) == (False, None, False)  # too old even to be used stale


def test_session_callers_are_forgotten_when_who_may_do_what_changes() -> None:
    ada = Caller(user_id=1, name="ada")
    cache = SessionCache(ttl_s=0.4)
    cache.put("cookie", ada, GENERATION.value)
    assert cache.lookup("cookie") == (ada, False)
    time.sleep(0.25)
    assert cache.lookup("cookie") == (ada, True)  # past half its life: read again
    GENERATION.bump()  # e.g. the user was disabled through this server
    assert cache.lookup("cookie") == (None, False)
    stale = GENERATION.value
    GENERATION.bump()  # a change committed while it was being read
    cache.put("cookie", ada, stale)
    assert cache.get("cookie") is None
    cache.put("cookie", ada, GENERATION.value)
    time.sleep(0.45)
    assert cache.get("cookie") is None  # never used after its TTL


def test_a_request_for_another_machine_keeps_the_callers_credential_for_that_server() -> None:
    peers = Peers(frozenset({"n1"}), 8642, "n1")
    here, there = Upstream("10.0.0.1", 9, "s", "n1"), Upstream("10.0.0.2", 9, "s", "n2")
    assert not peers.remote(here) and peers.remote(there)
    assert not Peers().remote(there)  # own nodes unknown: everything is local, as before
    assert peers.url(there, "ws") == "ws://10.0.0.2:8642"
    scope = {
        "type": "http",
        "client": ("192.0.2.7", 1),
        "headers": [
            (b"host", b"n1:8642"),
            (b"authorization", b"Bearer vai_x"),
            (b"cookie", b"virtuai_session=vai_y"),
            (b"x-virtuai-notebook-secret", b"forged"),
            (b"x-virtuai-forwarded-by", b"forged"),
            (b"connection", b"keep-alive"),
        ],
    }
    headers = peer_headers(scope, "n1")
    assert ("authorization", "Bearer vai_x") in headers
    assert ("cookie", "virtuai_session=vai_y") in headers
    assert ("host", "n1:8642") in headers
    assert ("x-forwarded-for", "192.0.2.7") in headers
    assert headers[-2:] == [("X-Virtuai-Csrf", "1"), ("x-virtuai-forwarded-by", "n1")]
    flat = "\n".join(f"{k}: {v}" for k, v in headers)
    assert "forged" not in flat and "keep-alive" not in flat
    assert not any(k == "host" for k, _ in peer_headers(scope, "n1", websocket=True))
    assert forwarded({"headers": [(b"x-virtuai-forwarded-by", b"n1")]})
    assert not forwarded(scope | {"headers": []})


def test_a_suspect_replica_is_skipped_until_probed_again() -> None:
    a, b = Upstream("127.0.0.1", 1, "a"), Upstream("127.0.0.1", 2, "b")
    route = Route(1, Access.TENANT, None, "t", "ready", "", (a, b), probed_at=(100.0, 100.0))
    suspects = Suspects()
    assert {route.pick(suspects) for _ in range(4)} == {a, b}  # round robin
    suspects.mark(a, 105.0)
    assert {route.pick(suspects) for _ in range(4)} == {b}
    assert suspects.usable(route)
    suspects.mark(b, 105.0)
    assert route.pick(suspects) is None and not suspects.usable(route)
    # The reconciler probed a again after the mark: the probe decides, a is back.
    later = Route(1, Access.TENANT, None, "t", "ready", "", (a, b), probed_at=(106.0, 100.0))
    assert {later.pick(suspects) for _ in range(4)} == {a}
    # A notebook (never probed) is never skipped: it has no other replica to go to.
    notebook = Route(2, Access.OWNER, 1, "t", "running", "", (a,))
    assert notebook.pick(suspects) == a


def test_a_request_a_replica_broke_off_is_a_502_naming_the_service_and_the_replica() -> None:
    target = parse_target("/svc/physics/iris/predict")
    assert target is not None
    error = broken_off(target, Upstream("10.0.0.7", 30123, "s", node="n1", job_id=42), "POST")
    assert STATUS[error.code] == status_of(error) == 502
    assert error.message.startswith("service physics/iris: replica job 42 (on n1) broke off")
    assert "POST" in error.message and "retry it if it is safe to repeat" in error.message
    unknown = broken_off(target, Upstream("10.0.0.7", 30123, "s"), "PUT")
    assert "a replica (on 10.0.0.7:30123)" in unknown.message
