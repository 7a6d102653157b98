"""A virtual-cluster runtime of a test's own: random prefix, own state directory and cgroup.

Nothing of a developer's real clusters, or of parallel test runs, is ever
touched (``doctor`` and the leak check only see this prefix).  ``close``
removes every cluster still recorded and fails when any kernel object of the
prefix is left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import string
import subprocess
import tempfile
import uuid
from pathlib import Path

from virtuai.vcruntime import RuntimeConfig, VcRuntime

TEST_POOL = "10.200.0.0/13"  # test subnets are cut where this host has no route
POOL_PREFIXLEN = 20  # 16 clusters per test run


def make_runtime(user_prefix: str) -> VcRuntime:
    prefix = "t" + "".join(random.choices(string.ascii_lowercase + string.digits, k=2))
    state = Path(tempfile.mkdtemp(prefix="vai-vcapi-state-", dir="/var/tmp"))
    config = RuntimeConfig(
        state_dir=state,
        prefix=prefix,
        cgroup_parent=f"virtuai-vcapi-{prefix}-{uuid.uuid4().hex[:6]}",
        user_prefix=user_prefix,
        node_pids_max=512,
    )
    runtime = VcRuntime(config)
    runtime.check_host()
    return runtime


def close_runtime(runtime: VcRuntime) -> None:
    """Delete what is left, then insist that nothing of this runtime remains."""
    for vc_id in runtime.list_vcs():
        runtime.delete(vc_id)
    left = runtime.inventory()
    if left:  # still clean up, then fail
        runtime.remove_leaked(left)
    layout = runtime.cgroups.layout
    for root in set(layout.roots.values()):
        parent = Path(root) / layout.parent
        if parent.is_dir():
            parent.rmdir()
    shutil.rmtree(runtime.state_dir, ignore_errors=True)
    assert not left, f"kernel objects left behind: {[o.describe() for o in left]}"


def free_pool() -> str:
    """A random /20 of the test pool that overlaps no route of this host."""
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = [
        net
        for route in json.loads(out or "[]")
        if (dst := str(route.get("dst", ""))) and dst != "default"
        for net in [ipaddress.ip_network(dst, strict=False)]
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0
    ]
    candidates = list(ipaddress.ip_network(TEST_POOL).subnets(new_prefix=POOL_PREFIXLEN))
    random.shuffle(candidates)
    for candidate in candidates:
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise AssertionError(f"no free /{POOL_PREFIXLEN} in {TEST_POOL}")


def can_run_vcs() -> str | None:
    """Why virtual clusters cannot be tested here, or ``None``."""
    if os.geteuid() != 0:
        return "virtual clusters need root (namespaces, mounts, bridges, cgroups, nftables)"
    return None


PROGRAMS = ("/bin/sh", "/usr/bin/sleep", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/hostname")


def tiny_rootfs(target: Path, programs: tuple[str, ...] = PROGRAMS) -> Path:
    """A root file system with ``programs`` and the shared libraries they load."""
    for d in ("bin", "usr/bin", "etc", "proc", "dev", "tmp", "var/tmp"):
        (target / d).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    files: set[str] = set()
    for program in programs:
        files.add(program)
        ldd = subprocess.run(["ldd", program], capture_output=True, text=True, check=False).stdout
        for line in ldd.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                files.add(path)
    for path in files:
        dest = target / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
    (target / "etc/hostname").write_text("image\n")
    return target
