"""The server builds its routes before its first request (``api.app.warm_routes``)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from fastapi.testclient import TestClient

from support.platform import Platform
from virtuai.api.app import create_app, warm_routes

PATHS = ["/api/v1/jobs?limit=50", "/api/v1/jobs/1", "/api/v1/tenants", "/api/v1/nodes"]


def first_requests_build(platform: Platform, warm: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many pydantic adapters a new application makes while it answers its first
    requests (FastAPI makes one per parameter and body field of a route it builds)."""
    app = create_app(platform.context)
    if warm:
        warm_routes(app)
    made: list[Any] = []
    real = pydantic.TypeAdapter.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(args[:1])
        real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pydantic.TypeAdapter, "__init__", counting)
        client = TestClient(app)
        headers = {"Authorization": f"Bearer {platform.admin_token}"}
        for path in PATHS:
            assert client.get(path, headers=headers).status_code in (200, 404)
        assert client.post("/api/v1/jobs", headers=headers, json={}).status_code == 422
    return len(made)


def test_a_warmed_application_builds_nothing_at_its_first_requests(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.tenant("physics")
    platform.submit(platform.admin_token, ["true"], tenant="physics")
    if first_requests_build(platform, False, monkeypatch) == 0:
        pytest.skip("this FastAPI builds its routes when they are included: nothing to warm")
    assert first_requests_build(platform, True, monkeypatch) == 0
