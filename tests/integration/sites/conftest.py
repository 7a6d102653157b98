"""A real Slurm cluster (scripts/slurm-dev.sh) and the platform in-process sending work to it.

The cluster is started once per session (and stopped at the end only if this
session started it); tests need root, as the script does.  Every test gets a
fresh platform over SQLite with the cluster added as site ``vsd`` through the API,
over SSH to the cluster's login node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "slurm-dev.sh"
DEV_DIR = Path(os.environ.get("VIRTUAI_SLURM_DEV_DIR", "/tmp/virtuai-slurm-dev"))
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}


@dataclass(frozen=True)
class SlurmDev:
    dir: Path
    login: str
    identity: Path
    known_hosts: Path

    def script(self, *args: str) -> str:
        result = subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def pid(self, daemon: str) -> int:
        return int((self.dir / "run" / f"{daemon}.pid").read_text())

    def ssh(self, command: str) -> str:
        """A command on the login node, as the cluster's user."""
        user_host = self.login
        result = subprocess.run(
            [
                "ssh",
                "-i",
                str(self.identity),
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "BatchMode=yes",
                user_host,
                command,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmDev]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm cluster of scripts/slurm-dev.sh needs root")
    if shutil.which("slurmctld") is None:
        pytest.fail("slurm-wlm is missing: run scripts/system-packages.sh", pytrace=False)
    was_up = (DEV_DIR / "mode").exists()  # someone's cluster (maybe degraded): leave it up
    dev = SlurmDev(
        DEV_DIR,
        "vsdlab@10.252.77.5",
        DEV_DIR / "ssh" / "id_ed25519",
        DEV_DIR / "ssh" / "known_hosts",
    )
    line = dev.script("start").strip().splitlines()[-1]
    assert line.startswith("virtuai site add vsd --slurm --login vsdlab@10.252.77.5 ")
    yield dev
    if not was_up:
        dev.script("stop")


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def site_platform(slurm: SlurmDev, sessions: sessionmaker[Session]) -> Iterator[Platform]:
    # The cluster may have lost a daemon to an earlier test (or to a neighbour): repair it.
    slurm.script("start")
    state = public_dir("vai-sites-")
    platform = Platform(sessions, state, driver_settings=driver_settings_for_tests())
    platform.tenant("physics")
    platform.ok(
        "POST",
        "/api/v1/sites",
        json={
            "name": "vsd",
            "login": slurm.login,
            "identity": slurm.identity.read_text(),
            "known_hosts": slurm.known_hosts.read_text(),
            "partition": "debug",
            "account_map": {"physics": "physics"},
        },
    )
    platform.tick()  # the site's nodes join the inventory
    yield platform
    active = [j["id"] for j in platform.ok("GET", "/api/v1/jobs") if j["state"] not in FINISHED]
    for job_id in active:
        platform.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    if active:
        try:
            platform.wait_for(active, timeout=60)
        finally:
            platform.sites.close()
    else:
        platform.sites.close()
    remove_state(state, ["physics"])
