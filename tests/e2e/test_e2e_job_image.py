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
