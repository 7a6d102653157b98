"""A tenant's default workspace is made and given away in one step, under a lock shared
by every launch there (the tasks of one gang on several machines share it)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from virtuai.drivers.local.driver import _create_workdir
from virtuai.host import files


def test_a_launch_waits_for_the_workspace_another_launch_is_making(tmp_path: Path) -> None:
    workspace = tmp_path / "workspaces" / "lab"
    workspace.parent.mkdir()
    uid, gid = os.getuid(), os.getgid()
    done = threading.Event()
    with files.locked(workspace.parent / files.DIR_LOCK):
        # Another machine made the directory and has not given it to the tenant yet.
        workspace.mkdir(mode=0o755)
        other = threading.Thread(
            target=lambda: (_create_workdir(workspace, uid, gid), done.set()), daemon=True
        )
        other.start()
        # This launch must not go on (to chdir as the tenant) into a directory half made.
        assert not done.wait(0.5)
        workspace.chmod(0o700)
    assert done.wait(10)
    other.join()
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700  # left as its maker finished it


def test_the_first_launch_makes_the_workspace_the_tenants_and_others_leave_it(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "deep" / "workspaces" / "lab"
    uid, gid = os.getuid(), os.getgid()
    threads = [
        threading.Thread(target=_create_workdir, args=(workspace, uid, gid)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    info = workspace.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and (info.st_uid, info.st_gid) == (uid, gid)
    (workspace / "kept").write_text("x")
    _create_workdir(workspace, uid, gid)  # an existing workspace is left alone
    assert (workspace / "kept").read_text() == "x"
