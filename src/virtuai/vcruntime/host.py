"""Preconditions: can this machine run virtual clusters at all?

Checked once per runtime before anything is built, so that a machine without
root, overlayfs, network namespaces, cgroups or the tools fails at once with
one plain sentence (``ConfigurationError``) and nothing half-made behind.
Each probe returns ``None`` or the reason; tests replace them one by one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from virtuai.host.cgroups import CgroupLayout, detect_layout
from virtuai.vcruntime import system
from virtuai.vcruntime.storage import check_state_dir

TOOLS = {
    "bwrap": "bubblewrap",
    "ip": "iproute2",
    "nft": "nftables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}


def probe_root() -> str | None:
    if os.geteuid() != 0:
        return (
            "virtual clusters need root (namespaces, mounts, bridges, cgroups); "
            "the server is not root"
        )
    return None


def probe_tools() -> str | None:
    missing = [
        f"{tool} (Debian package {pkg})"
        for tool, pkg in TOOLS.items()
        if system.which(tool) is None
    ]
    if not Path("/bin/sh").exists():
        missing.append("/bin/sh")
    return f"missing programs: {', '.join(missing)}" if missing else None


def probe_overlay(state_dir: Path) -> str | None:
    """Mount a throw-away overlay inside the state directory (where the real ones go)."""
    probe = state_dir / f".probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    dirs = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    try:
        for d in dirs.values():
            d.mkdir(parents=True)
        options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
        try:
            system.mount("overlay", dirs["merged"], "overlay", 0, options)
        except OSError as exc:
            return f"overlayfs cannot be mounted in {state_dir}: {exc.strerror}"
        system.umount(dirs["merged"])
        return None
    except OSError as exc:
        return f"cannot probe overlayfs in {state_dir}: {exc}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def probe_netns() -> str | None:
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    proc = system.run(["unshare", "--net", "--", "true"], check=False, timeout=10)
    if proc.returncode != 0:
        return f"network namespaces cannot be created: {proc.stderr.strip() or proc.returncode}"
    return None


def probe_cgroups(parent: str) -> tuple[CgroupLayout | None, str | None]:
    layout, reason = detect_layout(parent)
    if layout is None:
        return None, f"cgroups are not usable: {reason}"
    try:
        layout.prepare()
    except OSError as exc:
        return None, f"cannot create the parent cgroup {parent}: {exc}"
    return layout, None


def problems(state_dir: Path, cgroup_parent: str) -> tuple[CgroupLayout | None, list[str]]:
    """Every reason this host cannot run virtual clusters (empty: it can)."""
    found: list[str] = []
    if (reason := probe_root()) is not None:
        return None, [reason]  # nothing else can be probed without root
    if (reason := check_state_dir(state_dir)) is not None:
        return None, [reason]
    if (reason := probe_tools()) is not None:
        found.append(reason)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        return None, [*found, f"cannot create the state directory {state_dir}: {exc}"]
    if (reason := probe_overlay(state_dir)) is not None:
        found.append(reason)
    if not found and (reason := probe_netns()) is not None:
        found.append(reason)
    layout, reason = probe_cgroups(cgroup_parent)
    if reason is not None:
        found.append(reason)
    return layout, found
