"""A task over an image (``submit --image``): a bubblewrap sandbox with a copy-on-write root.

The same shape as a virtual node (``vcruntime/nodes.py``), for one task, without a
network of its own.  The supervisor (root) forks the sandbox's init:

1. it joins the task's cgroup (so the sandbox counts in the task's limits), enters a
   mount namespace of its own, makes every mount private, and mounts an overlay
   (``lowerdir`` = the image's read-only root, ``upperdir`` and ``workdir`` in
   ``TASK_DIR/sandbox``; ``nosuid,nodev``: no setuid program or device of the image
   works) -- the mount exists only in that namespace, so nothing is left on the
   host when the sandbox's processes are gone;
2. it execs ``bwrap --unshare-pid --unshare-ipc --die-with-parent --bind MERGED /
   --proc /proc --dev /dev --tmpfs /tmp --bind WORKDIR WORKDIR ... --cap-drop ALL --
   KEEPALIVE``: bubblewrap's pid 1 reaps orphans and the image's ``sleep`` keeps the
   namespaces alive.

The supervisor then starts the task *into* the sandbox exactly as into a virtual
node (enter its pid namespace, fork; the child enters its ipc, uts, net and mount
namespaces, drops to the tenant's user and execs), so the command and everything
it loads come from the image, as the tenant's unprivileged user.  The host's
network is shared, as for any local task; the task's own ``/proc`` shows only the
sandbox.  ``remove`` deletes the upper layer once the task has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from virtuai.host.files import log_tail
from virtuai.host.processes import create_time

SANDBOX_DIR = "sandbox"
LOG = "sandbox.log"
KEEPALIVE_SECONDS = "2147483647"
READY_TIMEOUT_S = 15.0
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLONE_NEWNS = 0x20000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
_UNSAFE_IN_OPTIONS = frozenset(",:\\ \t\n=")
# Host files a task commonly needs for the host's network, bound read-only if they exist.
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")


class SandboxError(Exception):
    """The sandbox could not be made; the message is shown to the user."""


def start(
    task_dir: Path,
    image: dict[str, Any],
    workdir: str,
    cgroup_procs: Sequence[Path],
    devices: Sequence[str] = (),
) -> dict[str, Any]:
    """Start the sandbox's init; returns ``{"init_pid", "init_create_time", "hostname"}``,
    what the supervisor enters as it enters a virtual node, and ``"processes"``: the
    sandbox's own (bubblewrap outside and as pid 1, the keep-alive), which must outlive a
    stop request's first signal so that the task inside gets its grace period."""
    root, keepalive = str(image["root"]), str(image["keepalive"])
    layers = task_dir / SANDBOX_DIR
    upper, work, merged = layers / "upper", layers / "work", layers / "merged"
    for text in (root, str(layers)):
        if _UNSAFE_IN_OPTIONS & set(text):
            raise SandboxError(f"{text} contains a character overlayfs options cannot hold")
    bwrap = shutil.which("bwrap", path=BASE_PATH)
    if bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed on this machine")
    layers.mkdir(mode=0o700, exist_ok=True)
    upper.mkdir(mode=0o755, exist_ok=True)  # the sandbox's "/" takes this mode
    for layer in (work, merged):
        layer.mkdir(mode=0o700, exist_ok=True)
    info_r, info_w = os.pipe()
    binds = [str(b) for b in image.get("binds", ())]
    argv = _bwrap_argv(bwrap, merged, workdir, keepalive, info_w, binds, devices)
    options = f"lowerdir={root},upperdir={upper},workdir={work}"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the init's child, reported through its log
        os.close(info_r)
        _exec_init(task_dir / LOG, cgroup_procs, merged, options, argv, info_w)
    os.close(info_w)
    try:
        child = _child_pid(info_r)
    finally:
        os.close(info_r)
    keepalive_pid = None if child is None else _wait_ready(child, keepalive)
    if child is None or keepalive_pid is None:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
        raise SandboxError(f"the sandbox over image {image.get('name')} did not start: "
                           f"{log_tail(task_dir / LOG)}")  # fmt: skip
    return {
        "init_pid": child,
        "init_create_time": create_time(child),
        "hostname": f"the sandbox of image {image.get('name')}",
        "processes": [pid, child, keepalive_pid],
    }


def remove(task_dir: Path) -> None:
    """Delete the sandbox's layers (its processes, and so its mounts, are gone)."""
    shutil.rmtree(task_dir / SANDBOX_DIR, ignore_errors=True)


def _bwrap_argv(
    bwrap: str,
    merged: Path,
    workdir: str,
    keepalive: str,
    info_fd: int,
    binds: Sequence[str] = (),
    devices: Sequence[str] = (),
) -> list[str]:
    argv = [
        bwrap,
        "--info-fd", str(info_fd),
        "--unshare-pid", "--unshare-ipc",
        "--die-with-parent",
        "--bind", str(merged), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--perms", "1777", "--tmpfs", "/dev/shm",
    ]  # fmt: skip
    for device in devices:  # the task's GPUs (``host.devices``): its own /dev lacks them
        argv += ["--dev-bind", device, device]
    # bubblewrap would make the workdir's missing parents 0700 (root's): make them 0755 first.
    for parent in reversed(Path(workdir).parents[:-1]):
        argv += ["--dir", str(parent)]
    argv += ["--bind", workdir, workdir]
    for path in binds:  # read-only (an environment built for the image), parents as above
        for parent in reversed(Path(path).parents[:-1]):
            argv += ["--dir", str(parent)]
        argv += ["--ro-bind", path, path]
    for path in HOST_FILES:
        argv += ["--ro-bind-try", path, path]
    return [*argv, "--cap-drop", "ALL", "--chdir", "/", "--", keepalive, KEEPALIVE_SECONDS]


def _exec_init(  # pragma: no cover - runs in the forked child
    log_path: Path,
    cgroup_procs: Sequence[Path],
    merged: Path,
    options: str,
    argv: list[str],
    info_w: int,
) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for procs in cgroup_procs:
            procs.write_text("0")
        os.setsid()
        libc = ctypes.CDLL(None, use_errno=True)
        _check(libc.unshare(_CLONE_NEWNS), "a mount namespace")
        _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")
        _check(
            libc.mount(b"overlay", str(merged).encode(), b"overlay", _MS_NOSUID | _MS_NODEV,
                       options.encode()),
            "the overlay over the image",
        )  # fmt: skip
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.set_inheritable(info_w, True)
        os.umask(0o022)  # the directories bubblewrap makes (the workdir's parents) are traversable
        os.execve(argv[0], argv, {"PATH": BASE_PATH, "LANG": "C.UTF-8"})
    except BaseException as exc:
        os.write(log, f"virtuai: cannot start the sandbox: {exc}\n".encode())
    os._exit(125)


def _check(result: int, what: str) -> None:  # pragma: no cover - runs in the forked child
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _child_pid(info_r: int) -> int | None:
    """bubblewrap's ``{"child-pid": N}``: the host pid of the sandbox's pid 1."""
    data = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([info_r], [], [], left)[0]:
            break
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        data += chunk
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return int(json.loads(data or b"null").get("child-pid", 0)) or None
    return None


def _wait_ready(pid: int, keepalive: str) -> int | None:
    """Ready once pid 1 has forked the keep-alive (the mounts and the pivot are done): its
    pid; ``None`` if pid 1 died or it took too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for kid in kids:
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0", 1)[0]
                if argv0.decode(errors="replace") == keepalive:
                    return int(kid)
        time.sleep(0.005)
    return None
