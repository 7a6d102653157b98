"""The gate ``virtuai up`` serves while the platform is built (``server/gate.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from virtuai.server.gate import Gate, Receive, Scope, Send, sqlite_health


async def platform(scope: Scope, receive: Receive, send: Send) -> None:
    """The platform's application: says which path it got."""
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def run(gate: Gate, *calls: tuple[str, float], ready_after: float | None = None) -> list[Any]:
    """GET each path after its delay, all at once; the platform is set after ``ready_after``."""

    async def main() -> list[Any]:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as client:

            async def get(path: str, delay: float) -> tuple[int, str]:
                await asyncio.sleep(delay)
                response = await client.get(path)
                return response.status_code, response.text

            async def build() -> None:
                if ready_after is not None:
                    await asyncio.sleep(ready_after)
                    gate.app = platform

            results = await asyncio.gather(build(), *(get(p, d) for p, d in calls))
            return list(results[1:])

    # In a thread of its own: in a full run, Playwright's sync API (tests/e2e/test_web.py)
    # keeps an event loop running in the main thread, where asyncio.run() is refused.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def test_healthz_answers_at_once_while_other_requests_wait_for_the_platform() -> None:
    gate = Gate(early_health=lambda: True)
    healthz, readyz, jobs, readyz_later = run(
        gate,
        ("/healthz", 0),
        ("/readyz", 0),
        ("/api/v1/jobs", 0),
        ("/readyz", 0.5),
        ready_after=0.2,
    )
    assert healthz == (200, '{"status": "starting"}')
    assert readyz == (503, '{"status": "starting"}')
    assert jobs == (200, "/api/v1/jobs")  # waited, then served by the platform: not refused
    assert readyz_later == (200, "/healthz")  # the platform's own health check


def test_without_an_early_check_healthz_waits_for_the_platform() -> None:
    (healthz,) = run(Gate(early_health=None), ("/healthz", 0), ready_after=0.1)
    assert healthz == (200, "/healthz")


def test_a_database_that_does_not_answer_is_not_healthy() -> None:
    (healthz,) = run(Gate(early_health=lambda: False), ("/healthz", 0), ready_after=None)
    assert healthz[0] == 503


def test_a_platform_that_never_comes_up_gets_503_not_a_hang() -> None:
    gate = Gate(early_health=lambda: True, wait_s=0.2)
    (jobs,) = run(gate, ("/api/v1/jobs", 0))
    assert jobs[0] == 503
    gate.failed = True
    readyz, healthz = run(gate, ("/readyz", 0), ("/healthz", 0))
    assert readyz == (503, '{"status": "failed"}')
    assert healthz[0] == 503  # a server going down is not healthy


def test_sqlite_health_checks_an_existing_file_only(tmp_path: Path) -> None:
    path = tmp_path / "virtuai.db"
    assert sqlite_health(f"sqlite:///{path}") is None  # a first start: nothing to check yet
    sqlite3.connect(path).close()
    path.write_bytes(b"")  # an empty file is an empty SQLite database
    check = sqlite_health(f"sqlite:///{path}")
    assert check is not None and check()
    path.write_bytes(b"not a database" * 100)
    assert not check()
    assert sqlite_health("postgresql://db/virtuai") is None
