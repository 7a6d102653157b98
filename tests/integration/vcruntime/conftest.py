"""Fixtures for virtual cluster tests: real namespaces, bridges, overlays, cgroups, nftables.

Everything made here carries a prefix random to this run (kernel objects), a
state directory of its own and a parent cgroup of its own, so parallel runs
and a developer's real clusters are never touched.  At the end, every
cluster still recorded is deleted and nothing of this run may be left.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vc_helpers import MakeSpec

from virtuai.host.users import unix_name
from virtuai.vcruntime import NodeSpec, RuntimeConfig, VcRuntime, VcSpec
from virtuai.vcruntime.ipam import allocate_subnet

USER_PREFIX = "vai-"
TEST_POOL = "10.200.0.0/13"  # subnets are picked where this host has no route


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(
            reason="virtual clusters need root (namespaces, mounts, bridges, cgroups, nftables)"
        )
        for item in items:
            if "integration/vcruntime" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def prefix() -> str:
    return "t" + "".join(random.choices(string.ascii_lowercase + string.digits, k=2))


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vai-vc-state-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tenant() -> Iterator[str]:
    name = f"tvc-{uuid.uuid4().hex[:6]}"
    yield name
    if os.geteuid() == 0:
        subprocess.run(["userdel", unix_name(name, USER_PREFIX)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def config(state_dir: Path, prefix: str) -> RuntimeConfig:
    return RuntimeConfig(
        state_dir=state_dir,
        prefix=prefix,
        cgroup_parent=f"virtuai-vctest-{prefix}-{uuid.uuid4().hex[:6]}",
        user_prefix=USER_PREFIX,
        node_pids_max=512,
    )


@pytest.fixture(scope="session")
def runtime(config: RuntimeConfig) -> Iterator[VcRuntime]:
    rt = VcRuntime(config)
    if os.geteuid() != 0:
        pytest.skip("virtual clusters need root")
    rt.check_host()
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    was = forwarding.read_text()  # gateway clusters turn it on; the host gets it back as it was
    yield rt
    forwarding.write_text(was)
    for vc_id in rt.list_vcs():
        rt.delete(vc_id)
    for image in rt.images.list():
        if not image.builtin:
            rt.images.delete(image.name)
    left = rt.inventory()
    layout = rt.cgroups.layout
    for root in set(layout.roots.values()):
        parent = Path(root) / layout.parent
        if parent.is_dir():
            parent.rmdir()
    assert not left, f"objects left behind by the tests: {[o.describe() for o in left]}"


def free_subnet() -> str:
    """A /24 of the test pool that no route of this host overlaps right now."""
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = []
    for route in json.loads(out or "[]"):
        dst = str(route.get("dst", ""))
        if dst and dst != "default":
            used.append(ipaddress.ip_network(dst, strict=False))
    pool = ipaddress.ip_network(TEST_POOL)
    # Start at a random place so that parallel runs rarely race for the same subnet.
    start = random.randrange(0, 2 ** (24 - pool.prefixlen))
    rotated = [ipaddress.ip_network(f"{pool.network_address + start * 256}/24")]
    v4_used = [u for u in used if isinstance(u, ipaddress.IPv4Network)]
    if not any(rotated[0].overlaps(u) for u in v4_used):
        return str(rotated[0])
    return str(allocate_subnet(v4_used, pool))


@pytest.fixture
def make_spec(tenant: str) -> MakeSpec:
    def make(n: int = 2, **overrides: Any) -> VcSpec:
        fields: dict[str, Any] = {
            "id": f"vc-{uuid.uuid4().hex[:10]}",
            "name": "c" + uuid.uuid4().hex[:5],
            "tenant": tenant,
            "subnet": free_subnet(),
            "nodes": tuple(NodeSpec(cpu_milli=500, memory=256 * 2**20) for _ in range(n)),
        }
        fields.update(overrides)
        return VcSpec(**fields)

    return make


@pytest.fixture
def vc(runtime: VcRuntime, make_spec: MakeSpec) -> Iterator[VcSpec]:
    """A running 2-node cluster, deleted after the test."""
    spec = make_spec(2)
    runtime.create(spec)
    yield spec
    runtime.delete(spec.id)
