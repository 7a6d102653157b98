"""Two installations on one host, each with its own database, never touch each other's tasks.

Before installation ids both put their tasks under the cgroup ``virtuai``: the
end of job 1 in one installation SIGKILLed job 1 of the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai.settings import Settings
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.installation import installation_id
from virtuai.store.migrate import migrate

pytestmark = pytest.mark.root


def installation(sessions: sessionmaker[Session], state: Path) -> Platform:
    """A platform whose cgroup name is derived from its database's installation id, as
    ``virtuai up`` derives it (the test keeps its own tenant-user prefix)."""
    derived = Settings(home=state).for_installation(installation_id(sessions)).local
    settings = driver_settings_for_tests(cgroup_name=derived.cgroup_name)
    return Platform(sessions, state, driver_settings=settings)


@pytest.fixture
def two(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[list[Platform]]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/other.db")
    migrate(engine)
    states = [public_dir("vai-inst-a-"), public_dir("vai-inst-b-")]
    platforms = [
        installation(session_factory, states[0]),
        installation(make_session_factory(engine), states[1]),
    ]
    yield platforms
    for platform, state in zip(platforms, states, strict=True):
        live = [j["id"] for j in platform.ok("GET", "/api/v1/jobs") if j["state"] == "running"]
        for job_id in live:
            platform.call("POST", f"/api/v1/jobs/{job_id}/cancel")
        if live:
            platform.wait_for(live)
        remove_state(state, [t["name"] for t in platform.ok("GET", "/api/v1/tenants")])
    engine.dispose()


def test_the_end_of_a_job_leaves_the_same_job_id_of_another_installation_running(
    two: list[Platform],
) -> None:
    a, b = two
    assert a.driver_settings.cgroup_name != b.driver_settings.cgroup_name
    ids = []
    for platform in two:
        platform.tenant("physics")
        ids.append(platform.submit(platform.admin_token, ["sleep", "60"], tenant="physics")["id"])
    assert ids[0] == ids[1]  # the same job id in both
    for platform, job_id in zip(two, ids, strict=True):
        platform.wait_for([job_id], states={"running"})
    a.ok("POST", f"/api/v1/jobs/{ids[0]}/cancel")
    assert a.wait_for([ids[0]])[ids[0]]["state"] == "cancelled"
    for _ in range(5):
        b.tick()
    job = b.job(ids[1])
    assert job["state"] == "running", job
    assert job["task_runs"][0]["outcome"] is None
