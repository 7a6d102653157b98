"""The platform in-process over SQLite and PostgreSQL; jobs are real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state


@pytest.fixture
def platform(session_factory: sessionmaker[Session]) -> Iterator[Platform]:
    state = public_dir("vai-state-")
    platform = Platform(session_factory, state, driver_settings=driver_settings_for_tests())
    yield platform
    # Leave no process behind: cancel what still runs and let the supervisors end it.
    active = [
        j["id"]
        for j in platform.ok("GET", "/api/v1/jobs", params={"limit": 10_000})
        if j["state"] not in ("succeeded", "failed", "cancelled", "timed_out")
    ]
    for job_id in active:
        platform.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    if active:
        platform.wait_for(active)
    tenants = [t["name"] for t in platform.ok("GET", "/api/v1/tenants")]
    remove_state(state, tenants)


@pytest.fixture(autouse=True)
def _skip_root_tests_when_not_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (cgroups, per-tenant Unix users)")
