"""The whole platform in the test process: real database, real local driver, real processes.

The API is driven through FastAPI's TestClient (real HTTP semantics, no
socket) and the control loops are ticked by the test, so a test decides
when scheduling happens and never waits on a background thread.  With a
``VcRuntime`` (``support.vclusters``) it runs virtual clusters too, with
real kernel objects.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from virtuai.api.app import create_app
from virtuai.api.context import ApiContext
from virtuai.auth.oidc import OidcVerifier
from virtuai.control.lifecycle import LifecycleConfig, LifecycleLoop
from virtuai.control.scheduling import SchedulingLoop
from virtuai.control.sitereaders import DriversWithSiteReaders
from virtuai.control.sites import SiteLoop, SiteLoopConfig
from virtuai.control.staging import StagingConfig, StagingLoop
from virtuai.control.vclusters import VcLoop, VcLoopConfig
from virtuai.domain.clock import SystemClock
from virtuai.domain.pyenvs import EnvOptions
from virtuai.domain.workload import DEFAULT_PRIORITY_CLASSES
from virtuai.drivers.base import Driver
from virtuai.drivers.local import LocalDriver
from virtuai.host.users import unix_name
from virtuai.server.bootstrap import bootstrap_admin
from virtuai.server.up import policy_from_settings
from virtuai.services.notebooks import NotebookOptions
from virtuai.services.planning import SchedulingRules
from virtuai.services.vclusters import VcOptions, VcRuntimeAccess
from virtuai.settings import LocalDriverSettings, OidcSettings, SchedulerSettings
from virtuai.store.db import lost_transaction, transaction
from virtuai.store.inventory import record_inventory
from virtuai.vcruntime import VcRuntime

# Tenants' Unix users of this test process only: the suite runs in several pytest
# processes at once (scripts/test.sh), and one's teardown (`userdel`) must not take the
# users whose uids own another's workspaces.
TEST_USER_PREFIX = f"vt{secrets.token_hex(2)}-"
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}


class Platform:
    """One control plane over a database and a task directory; restartable."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        state_dir: Path,
        *,
        driver_settings: LocalDriverSettings,
        oidc: OidcSettings | None = None,
        vcs: VcRuntime | None = None,
        vc_options: VcOptions | None = None,
    ) -> None:
        self.sessions = sessions
        self.state_dir = state_dir
        self.driver_settings = driver_settings
        self.vc_runtime = vcs
        self.vc_options = vc_options or VcOptions()
        clock = SystemClock()
        self.driver = LocalDriver(state_dir / "tasks", driver_settings, node_name="node-1")
        # Shared by the life cycle, the API and the site loop (which adds sites' drivers).
        self.drivers: dict[str, Driver] = {"local": self.driver}
        # What the API reads logs through: a site this instance does not drive gets a reader.
        self.readers = DriversWithSiteReaders(self.drivers, sessions)
        with transaction(sessions) as session:
            record_inventory(session, self.driver.inventory(), clock.now())
        first = bootstrap_admin(sessions, clock)
        if first is not None:
            (state_dir / "admin-token").write_text(first.token)
        self.admin_token = (state_dir / "admin-token").read_text()
        self.context = ApiContext(
            sessions=sessions,
            clock=clock,
            verifier=OidcVerifier(oidc or OidcSettings()),
            drivers=self.readers,
            rules=SchedulingRules(
                policy=policy_from_settings(SchedulerSettings()),
                priority_classes={p.name: p for p in DEFAULT_PRIORITY_CLASSES},
            ),
            vcs=VcRuntimeAccess(vcs) if vcs is not None else VcRuntimeAccess(),
            vc_options=self.vc_options,
            site_keys_dir=state_dir / "sites",
            environments=EnvOptions(state_dir / "workspaces", state_dir / "env-logs"),
            notebooks=NotebookOptions(state_dir / "workspaces"),
        )
        self.http = TestClient(create_app(self.context), raise_server_exceptions=False)
        # The server's own default policy: fair share, backfill, preemption, borrowing.
        rules = self.context.rules
        self.scheduling = SchedulingLoop(sessions, clock, rules.policy, rules.preemptible)
        self.sites = SiteLoop(sessions, self.drivers, clock, SiteLoopConfig(kill_grace_s=1))
        self.staging = StagingLoop(
            sessions, self.sites, clock, StagingConfig(workspaces_dir=state_dir / "workspaces")
        )
        self.lifecycle = LifecycleLoop(
            sessions,
            self.drivers,
            clock,
            LifecycleConfig(
                workspaces_dir=state_dir / "workspaces",
                kill_grace_s=driver_settings.kill_grace_s,
            ),
            vnodes=vcs,
        )
        # Reconciled at the first tick, then when a test says so (``vcs.reconcile()``).
        self.vcs = (
            None
            if vcs is None
            else VcLoop(
                sessions, vcs, clock, VcLoopConfig(reconcile_interval_s=3600, stop_grace_s=1)
            )
        )

    def restarted(self) -> Platform:
        """A new control plane over the same state, as after ``kill -9`` and ``virtuai up``."""
        vcs = None if self.vc_runtime is None else VcRuntime(self.vc_runtime.config)
        return Platform(
            self.sessions,
            self.state_dir,
            driver_settings=self.driver_settings,
            vcs=vcs,
            vc_options=self.vc_options,
        )

    # -- HTTP -------------------------------------------------------------------------------

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return self.http.request(method, path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.call(method, path, token, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()

    def tenant(self, name: str, **quota: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.ok(
            "POST", "/api/v1/tenants", json={"name": name, "quota": quota}
        )
        return result

    def user(self, name: str, tenant: str, role: str = "member") -> str:
        created = self.ok(
            "POST", "/api/v1/users", json={"name": name, "tenant": tenant, "role": role}
        )
        token: str = created["token"]
        return token

    def submit(self, token: str, command: list[str], **fields: Any) -> dict[str, Any]:
        body = {"command": command, **fields}
        body.setdefault("resources", {"cpu": 0.5, "memory": "128Mi"})
        job: dict[str, Any] = self.ok("POST", "/api/v1/jobs", token, json=body)
        return job

    def job(self, job_id: int, token: str | None = None) -> dict[str, Any]:
        job: dict[str, Any] = self.ok("GET", f"/api/v1/jobs/{job_id}", token)
        return job

    def logs(self, job_id: int, task: int = 0, stream: str = "stdout") -> str:
        text: str = self.ok(
            "GET", f"/api/v1/jobs/{job_id}/logs", params={"task": task, "stream": stream}
        )["data"]
        return text

    # -- loops ------------------------------------------------------------------------------

    def tick(self) -> None:
        steps = [self.sites.tick, self.staging.tick, self.lifecycle.tick, self.scheduling.tick]
        if self.vcs is not None:
            steps.append(self.vcs.tick)
        for step in [*steps, self.lifecycle.tick]:
            retrying_lost_transactions(step)

    def wait_for(
        self, job_ids: Iterable[int], states: set[str] = FINISHED, timeout: float = 30.0
    ) -> dict[int, dict[str, Any]]:
        """Tick until every job is in one of ``states``; return their last view."""
        ids = list(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            jobs = {i: self.job(i) for i in ids}
            if all(j["state"] in states for j in jobs.values()):
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {states}: {jobs}")
            time.sleep(0.05)


def retrying_lost_transactions(step: Callable[[], object], attempts: int = 3) -> None:
    """Run a loop's step as the server's ``LoopRunner`` does: a step whose transaction the
    database ended (on PostgreSQL, one left idle past the loops' 1 s limit by a process
    starved of the CPU: ``store.lease``) wrote nothing and is run again.  Any other error,
    or a loss ``attempts`` times in a row, fails the test."""
    for attempt in range(1, attempts + 1):
        try:
            step()
            return
        except Exception as error:
            if attempt == attempts or not lost_transaction(error):
                raise


def public_dir(prefix: str) -> Path:
    """A directory tenant users can traverse (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def driver_settings_for_tests(**overrides: Any) -> LocalDriverSettings:
    values: dict[str, Any] = {
        "kill_grace_s": 1,
        "cpu": 4,
        "memory": "8Gi",
        "cgroup_name": f"virtuai-test-{uuid.uuid4().hex[:8]}",
        "user_prefix": TEST_USER_PREFIX,
        "gpus": [{"model": "declared-a100", "memory": "80Gi"}] * 2,
    }
    values.update(overrides)
    return LocalDriverSettings(**values)


def remove_state(state_dir: Path, tenants: Iterable[str]) -> None:
    shutil.rmtree(state_dir, ignore_errors=True)
    if os.geteuid() == 0:
        for tenant in tenants:
            subprocess.run(
                ["userdel", unix_name(tenant, TEST_USER_PREFIX)], capture_output=True, check=False
            )
