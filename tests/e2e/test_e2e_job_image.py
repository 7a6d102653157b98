"""`virtuai submit --image`: a job in a bubblewrap sandbox over an imported image's root.

A real `virtuai up`, the real CLI, a tiny image built from host programs (as the
virtual-cluster tests build theirs) and imported by the administrator.  The job
sees the image's files (not the host's), runs as the tenant's unprivileged user,
writes its results into its workdir (bound in, so they stay on the host), cannot
change the image, and sees only its own processes.  An unknown image, or an image
with a virtual cluster, is refused at submit naming the field.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
import uuid
from pathlib import Path

import pytest

from support.platform import TEST_USER_PREFIX
from support.server import Server
from support.vclusters import can_run_vcs, tiny_rootfs
from virtuai.host.users import unix_name

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs())),
]

# The e2e module's fixtures: a runtime of the test's own and a server on it.
from test_e2e_vc import runtime_config, server  # noqa: E402, F401

PROGRAMS = ("/bin/sh", "/usr/bin/sleep", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/id",
            "/usr/bin/touch")  # fmt: skip
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}


def _wait_end(srv: Server, token: str, job: int) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = srv.json("job", str(job), token=token)
        if shown["state"] in FINISHED:
            return dict(shown)
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not end")


def test_a_job_runs_over_an_image(server: Server, tmp_path: Path) -> None:  # noqa: F811
    srv = server
    rootfs = tiny_rootfs(tmp_path / "rootfs", PROGRAMS)
    marker = f"tiny image {uuid.uuid4().hex[:8]}"
    (rootfs / "etc/image-release").write_text(marker + "\n")
    name = "tiny-" + os.urandom(3).hex()
    srv.cli("image", "import", name, "--from-dir", str(rootfs))
    srv.cli("tenant", "create", "physics", "--cpu", "2", "--memory", "2Gi")
    alice = srv.cli("user", "create", "alice", "--tenant", "physics").strip()
    workspaces = Path(srv.env["VIRTUAI_WORKSPACES"])
    try:
        script = (
            "cat /etc/image-release; id -u; "
            "[ -e /usr/bin/python3 ] && echo host-visible; "  # the host has it, the image not
            "touch /usr/bin/x 2>/dev/null && echo image-writable; "
            "ls /proc | while read p; do case $p in [0-9]*) echo pid;; esac; done > procs; "
            "cat procs | (n=0; while read l; do n=$((n+1)); done; echo procs=$n); "
            "echo result > out.txt"
        )
        job = int(srv.cli("submit", "--image", name, "--cpu", "0.5", "--memory", "256Mi",
                          "--", "sh", "-c", script, token=alice))  # fmt: skip
        shown = _wait_end(srv, alice, job)
        out = srv.cli("logs", str(job), token=alice)
        assert shown["state"] == "succeeded", (shown, out)
        assert shown["image"] == name
        lines = out.splitlines()
        assert lines[0] == marker  # the image's root, not the host's
        uid = pwd.getpwnam(unix_name("physics", TEST_USER_PREFIX)).pw_uid
        assert lines[1] == str(uid) and uid != 0  # the tenant's unprivileged user
        assert "host-visible" not in out and "image-writable" not in out
        procs = int(next(line for line in lines if line.startswith("procs="))[6:])
        assert procs <= 6, out  # the sandbox's own processes only (sh, ls, read loops)
        # The workdir was bound in: the result is on the host, owned by the tenant's user.
        result = workspaces / "physics" / "out.txt"
        assert result.read_text() == "result\n" and result.stat().st_uid == uid
        assert not (rootfs / "usr/bin/x").exists()
        # Once the task is released, its sandbox's upper layer is gone (the mounts died with it).
        layers = srv.home / "tasks" / f"{job}.0.0" / "sandbox"
        deadline = time.monotonic() + 15
        while layers.exists():
            assert time.monotonic() < deadline, "the sandbox's layers were not removed"
            time.sleep(0.2)

        # A stop request's SIGTERM reaches the task inside (its trap runs), not the sandbox
        # (the trap's pause must end within the 1 s kill grace, however loaded the machine).
        trap = (
            "trap 'sleep 0.1; echo got-term > term.txt; exit 0' TERM; echo up > up.txt; "
            "while :; do sleep 0.2; done"
        )
        stopped = int(srv.cli("submit", "--image", name, "--cpu", "0.5", "--memory", "256Mi",
                              "--", "sh", "-c", trap, token=alice))  # fmt: skip
        deadline = time.monotonic() + 30
        while not (workspaces / "physics" / "up.txt").exists():
            assert time.monotonic() < deadline, srv.json("job", str(stopped), token=alice)
            time.sleep(0.2)
        srv.cli("cancel", str(stopped), token=alice)
        assert _wait_end(srv, alice, stopped)["state"] == "cancelled"
        assert (workspaces / "physics" / "term.txt").read_text() == "got-term\n"

        # The built-in `host` image: the host's root, copy on write, as for virtual clusters.
        script = "id -u; cat /etc/debian_version"
        on_host = int(srv.cli("submit", "--image", "host", "--cpu", "0.5", "--memory", "256Mi",
                              "--", "sh", "-c", script, token=alice))  # fmt: skip
        assert _wait_end(srv, alice, on_host)["state"] == "succeeded"
        host_out = srv.cli("logs", str(on_host), token=alice).splitlines()
        assert host_out == [str(uid), Path("/etc/debian_version").read_text().strip()]

        refused = srv.run("submit", "--image", "nope", "--", "true", token=alice)
        assert refused.returncode == 1, refused
        assert "image nope does not exist" in refused.stderr
        assert "image" in refused.stderr.split("field:")[-1], refused.stderr
        srv.cli("vc", "create", "lab", "--nodes", "1", "--cpu-per-node", "0.5",
                "--memory-per-node", "256Mi", token=alice)  # fmt: skip
        with_vc = srv.run("submit", "--image", name, "--vc", "lab", "--", "true", token=alice)
        assert with_vc.returncode == 1 and "field: image" in with_vc.stderr, with_vc.stderr
        srv.cli("vc", "delete", "lab", "--wait", token=alice)
    finally:
        srv.run("image", "delete", name)


PYTHON_PROGRAMS = (*PROGRAMS, "/usr/bin/python3.11", "/usr/bin/flock", "/usr/bin/mkdir",
                   "/usr/bin/date", "/usr/bin/dirname", "/usr/bin/rm")  # fmt: skip


def _python_rootfs(target: Path) -> Path:
    """A tiny image with Debian's Python 3.11 and its standard library (no pip in it)."""
    rootfs = tiny_rootfs(target, PYTHON_PROGRAMS)
    shutil.copytree(
        "/usr/lib/python3.11",
        rootfs / "usr/lib/python3.11",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter", "ensurepip"),
    )
    return rootfs


def _wait_env(srv: Server, token: str, name: str) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shown = srv.json("env", "show", name, token=token)
        if shown["state"] != "building":
            return dict(shown)
        time.sleep(0.3)
    raise AssertionError(f"environment {name} was not built")


@pytest.mark.skipif(not Path("/usr/bin/python3.11").exists(), reason="needs Debian's python3.11")
def test_an_environment_built_for_an_image_runs_in_its_jobs(
    server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    srv = server
    rootfs = _python_rootfs(tmp_path / "rootfs")
    name = "py-" + os.urandom(3).hex()
    srv.cli("image", "import", name, "--from-dir", str(rootfs))
    srv.cli("tenant", "create", "chemistry", "--cpu", "2", "--memory", "2Gi")
    carol = srv.cli("user", "create", "carol", "--tenant", "chemistry").strip()
    try:
        # Built with the image's Python, in a sandbox over the image, as the tenant's user.
        srv.cli("env", "create", "imaged", "--image", name, "--python", "3.11", token=carol)
        env = _wait_env(srv, carol, "imaged")
        assert env["state"] == "ready", srv.cli("env", "logs", "imaged", token=carol)
        assert env["image"] == name
        venv = Path(str(env["path"]))
        uid = pwd.getpwnam(unix_name("chemistry", TEST_USER_PREFIX)).pw_uid
        assert venv.stat().st_uid == uid
        home = (venv / "pyvenv.cfg").read_text()
        assert "home = /usr/bin" in home, home  # the image's interpreter made it
        # The same inputs for the host are another build.
        srv.cli("env", "create", "plain", "--python", "3.11", token=carol)
        assert srv.json("env", "show", "plain", token=carol)["digest"] != env["digest"]

        script = (
            "python -c 'import sys; print(sys.prefix); print(sys.executable)'; cat /etc/hostname"
        )
        job = int(srv.cli("submit", "--image", name, "--env", "imaged", "--cpu", "0.5",
                          "--memory", "256Mi", "--", "sh", "-c", script, token=carol))  # fmt: skip
        shown = _wait_end(srv, carol, job)
        out = srv.cli("logs", str(job), token=carol)
        assert shown["state"] == "succeeded", (shown, out)
        assert out.splitlines() == [str(venv), f"{venv}/bin/python", "image"], out

        # An environment made for an image does not run on the host, nor the other way round.
        on_host = srv.run("submit", "--env", "imaged", "--", "true", token=carol)
        assert on_host.returncode == 1 and "field: environment" in on_host.stderr
        assert f"built for image {name}" in on_host.stderr, on_host.stderr
        _wait_env(srv, carol, "plain")
        crossed = srv.run("submit", "--image", name, "--env", "plain", "--", "true", token=carol)
        assert crossed.returncode == 1 and "field: environment" in crossed.stderr
        missing = srv.run("env", "create", "x", "--image", "nope", token=carol)
        assert missing.returncode == 1 and "image nope does not exist" in missing.stderr
    finally:
        srv.run("env", "delete", "imaged", token=carol)
        srv.run("image", "delete", name)
