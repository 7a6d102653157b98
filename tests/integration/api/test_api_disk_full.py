"""A full disk refuses new work clearly and loses or duplicates nothing.

A real 4 MiB tmpfs holds a real SQLite database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.platform import Platform, driver_settings_for_tests, public_dir, remove_state
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate

pytestmark = pytest.mark.root


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_submissions_and_loses_nothing(small_disk: Path) -> None:
    engine = create_db_engine(f"sqlite:///{small_disk}/virtuai.db")
    migrate(engine)
    state = public_dir("vai-state-")
    platform = Platform(
        make_session_factory(engine), state, driver_settings=driver_settings_for_tests()
    )
    try:
        platform.tenant("physics")
        alice = platform.user("alice", "physics")
        filler = small_disk / "filler"
        with filler.open("wb") as out:  # fill the disk to the last block
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        accepted, refused = [], None
        for _ in range(200):
            response = platform.call(
                "POST",
                "/api/v1/jobs",
                alice,
                json={"command": ["echo", "x" * 2000], "env": {"PAD": "y" * 20000}},
            )
            if response.status_code == 201:
                accepted.append(response.json()["id"])
                continue
            refused = response
            break
        assert refused is not None, "the disk never filled up"
        assert refused.status_code == 503
        error = refused.json()
        assert (error["code"], error["field"]) == ("unavailable", None)
        assert error["message"].startswith("the server's disk is full: nothing was recorded")
        filler.unlink()
        after = platform.submit(alice, ["true"])["id"]
        ids = sorted(j["id"] for j in platform.ok("GET", "/api/v1/jobs", alice))
        assert ids == sorted([*accepted, after])  # every accepted job is there, once
    finally:
        engine.dispose()
        remove_state(state, ["physics"])
