"""The common job page and job detail are answered by ``api/fastread.py``, past the
framework, with the endpoint's very bytes; every other case, and every error, by the
full application; a revoked token is refused there at once too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from support.platform import Platform
from virtuai.api.fastread import FastRead


@pytest.fixture
def jobs(platform: Platform) -> dict[str, Any]:
    platform.tenant("physics")
    platform.tenant("biology")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "biology")
    submitted = [platform.submit(t, ["true"])["id"] for t in (alice, bob, alice, alice, bob)]
    array = platform.submit(alice, ["true"], array="0-2")
    return {"alice": alice, "bob": bob, "ids": submitted, "array": array["array_id"]}


def both(platform: Platform, path: str, token: str | None, query: str) -> tuple[Any, Any]:
    """The answer of the fast path, and of the full application (an unknown parameter,
    which the endpoint ignores, sends the request there)."""
    fast = platform.call("GET", f"{path}?{query}" if query else path, token)
    full = platform.call("GET", f"{path}?{query}&unknown=1" if query else f"{path}?x=1", token)
    return fast, full


QUERIES = [
    "",
    "limit=2",
    "limit=50",
    "state=pending",
    "user=alice",
    "tenant=physics&limit=3",
    "limit=1&state=pending&user=alice",
]


def test_pages_and_details_are_the_endpoints_bytes(
    platform: Platform, jobs: dict[str, Any]
) -> None:
    for token in (None, jobs["alice"]):  # the administrator, a member of one tenant
        platform.ok("GET", "/api/v1/whoami", token)  # its token cached
        first = platform.ok("GET", "/api/v1/jobs", token, params={"limit": 2})
        queries = [*QUERIES, f"before_id={first[-1]['id']}", f"array_id={jobs['array']}"]
        for query in queries:
            fast, full = both(platform, "/api/v1/jobs", token, query)
            assert fast.status_code == full.status_code == 200, (query, fast.text)
            assert fast.content == full.content, query
            assert fast.headers.get("x-next-before-id") == full.headers.get("x-next-before-id")
            assert fast.headers["content-type"] == full.headers["content-type"]
        for job_id in jobs["ids"]:
            fast, full = both(platform, f"/api/v1/jobs/{job_id}", token, "")
            assert (fast.status_code, fast.content) == (full.status_code, full.content)
    # The pages still walk back by id, and a member sees its tenant's jobs only.
    walked: list[int] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"before_id": before} if before else {})
        page = platform.call("GET", "/api/v1/jobs", jobs["alice"], params=params)
        walked += [j["id"] for j in page.json()]
        before = page.headers.get("x-next-before-id")
        if before is None:
            break
    everything = platform.ok("GET", "/api/v1/jobs", params={"limit": 100})
    assert walked == [j["id"] for j in everything if j["tenant"] == "physics"]


class Behind:
    """The application behind the middleware: records what reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"] + "?" + scope["query_string"].decode())
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_only_the_common_case_skips_the_application(
    platform: Platform, jobs: dict[str, Any]
) -> None:
    behind = Behind()
    client = TestClient(FastRead(behind, platform.context))
    alice = {"Authorization": f"Bearer {jobs['alice']}"}
    job_id = jobs["ids"][0]
    uncached = {"Authorization": f"Bearer {platform.user('carl', 'physics')}"}
    platform.ok("GET", "/api/v1/whoami", jobs["alice"])  # alice's token cached, carl's not

    for common in ["/api/v1/jobs", "/api/v1/jobs?limit=50&state=running", f"/api/v1/jobs/{job_id}"]:
        answer = client.get(common, headers=alice)
        assert answer.status_code == 200 and behind.reached == [], common

    others = [
        "/api/v1/jobs?limit=0",
        "/api/v1/jobs?limit=10001",
        "/api/v1/jobs?limit=05",
        "/api/v1/jobs?limit=%2B5",
        "/api/v1/jobs?limit=5&limit=6",
        "/api/v1/jobs?before_id=0",
        "/api/v1/jobs?state=",
        "/api/v1/jobs?state=sleeping",  # refused by the service: the application words it
        "/api/v1/jobs?tenant=biology",  # not alice's
        "/api/v1/jobs?user=" + "u" * 64,
        "/api/v1/jobs?other=1",
        "/api/v1/jobs/0",
        "/api/v1/jobs/2147483648",
        "/api/v1/jobs/x1",
        f"/api/v1/jobs/{job_id}?x=1",
        f"/api/v1/jobs/{jobs['ids'][1]}",  # bob's: not found for alice
        f"/api/v1/jobs/{job_id}/logs",
    ]
    for other in others:
        behind.reached.clear()
        assert client.get(other, headers=alice).status_code == 299, other
        assert len(behind.reached) == 1, other
    for headers in ({}, uncached, {"Authorization": "Basic eDp5"}):
        behind.reached.clear()
        assert client.get("/api/v1/jobs", headers=headers).status_code == 299
        assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).status_code == 299
        assert len(behind.reached) == 2


def test_a_revoked_token_is_refused_at_once(platform: Platform, jobs: dict[str, Any]) -> None:
    made = platform.ok("POST", "/api/v1/tokens", jobs["alice"], json={"name": "laptop"})
    job_id = jobs["ids"][0]
    for _ in range(2):  # cached by the first, answered from the cache by the second
        assert platform.call("GET", "/api/v1/jobs", made["token"]).status_code == 200
        assert platform.call("GET", f"/api/v1/jobs/{job_id}", made["token"]).status_code == 200
    assert platform.call("DELETE", f"/api/v1/tokens/{made['id']}", jobs["alice"]).status_code == 204
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}"):
        refused = platform.call("GET", path, made["token"])
        assert refused.status_code == 401 and "revoked" in refused.json()["message"], path
