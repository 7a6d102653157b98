"""The private network of a virtual cluster: a bridge, and per node a netns and a veth pair.

Everything goes through ``ip`` (iproute2) in *batch* mode: one process sets
up the links of all nodes of a cluster, and one small ``ip -n <netns> -batch``
per node configures the inside (the kernel only lets a process configure the
namespace it is in).  Deletions use ``-force`` so that one missing object
does not stop the others from going.

Per cluster: bridge ``<p>-<tag>`` with the gateway address ``.1/24``, IPv6
off (no link-local address the nodes could reach the host on).  Per node:
netns ``<p>-<tag>-<i>`` with ``lo`` up and ``eth0`` (``.(i+2)/24``), whose
peer ``<p><tag>-<i>`` is a port of the bridge; a default route via ``.1``
only when the cluster has a gateway.  Isolation is the firewall's job
(``firewall.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path

from virtuai.errors import Conflict, DriverError
from virtuai.vcruntime import system
from virtuai.vcruntime.naming import Names
from virtuai.vcruntime.spec import VcSpec

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    kind: str  # "bridge", "veth", ...
    master: str | None
    up: bool


def ip_batch(commands: Iterable[str], *, netns: str | None = None, force: bool = False) -> str:
    """Run ``ip -batch`` (inside ``netns`` if given); returns stderr (with ``force``)."""
    script = "\n".join(commands) + "\n"
    argv = (
        ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    )
    proc = system.run(
        argv, input=script, check=not force, what=f"ip -batch{' in ' + netns if netns else ''}"
    )
    return proc.stderr


def links() -> dict[str, Link]:
    """Every network interface of the host's namespace."""
    out = system.run(["ip", "-j", "-d", "link", "show"], what="ip link show").stdout
    found: dict[str, Link] = {}
    for item in json.loads(out or "[]"):
        info = item.get("linkinfo") or {}
        name = str(item.get("ifname", ""))
        found[name] = Link(
            name,
            str(info.get("info_kind", "")),
            item.get("master"),
            "UP" in item.get("flags", ()),
        )
    return found


def netns_names() -> set[str]:
    try:
        return {p.name for p in NETNS_DIR.iterdir()}
    except FileNotFoundError:
        return set()


def netns_inode(name: str) -> int | None:
    with contextlib.suppress(OSError):
        return (NETNS_DIR / name).stat().st_ino
    return None


def process_netns_inode(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    return None


def routed_networks() -> list[IPv4Network]:
    """IPv4 networks the host routes (any table), but default and broadcast routes."""
    out = system.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"], what="ip route show"
    ).stdout
    found: list[IPv4Network] = []
    for route in json.loads(out or "[]"):
        dst = str(route.get("dst", ""))
        if dst in ("", "default") or route.get("type") == "broadcast":
            continue
        try:
            network = ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(network, IPv4Network) and network.prefixlen > 0:
            found.append(network)
    return found


def check_subnet_free(spec: VcSpec, names: Names) -> None:
    """``Conflict`` when a route of the host (other than our bridge's) overlaps the subnet."""
    out = system.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"], what="ip route show"
    ).stdout
    net = spec.network
    for route in json.loads(out or "[]"):
        dst, dev = str(route.get("dst", "")), route.get("dev")
        if dev == names.bridge or dst in ("", "default") or route.get("type") == "broadcast":
            continue
        try:
            other = ip_network(dst, strict=False)
        except ValueError:
            continue
        if isinstance(other, IPv4Network) and other.overlaps(net) and other.prefixlen > 0:
            raise Conflict(
                f"subnet {net} of virtual cluster {spec.name} overlaps the host's route to "
                f"{dst} on {dev}",
                field="subnet",
            )


def ensure_bridge(spec: VcSpec, names: Names) -> bool:
    """Create (or repair) the cluster's bridge; ``True`` when it was created."""
    bridge = names.bridge
    created = bridge not in links()
    if created:
        ip_batch([f"link add name {bridge} type bridge"])
    disable_v6 = Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6")
    if disable_v6.exists():
        disable_v6.write_text("1\n")
    gateway = f"{spec.gateway_address}/{spec.network.prefixlen}"
    current = _addresses(bridge)
    commands = [f"address flush dev {bridge}"] if current - {gateway} else []
    commands += [f"address replace {gateway} dev {bridge}", f"link set dev {bridge} up"]
    ip_batch(commands)
    return created


def _addresses(dev: str) -> set[str]:
    out = system.run(["ip", "-j", "-4", "address", "show", "dev", dev], check=False).stdout
    found: set[str] = set()
    with contextlib.suppress(ValueError):
        for item in json.loads(out or "[]"):
            for addr in item.get("addr_info", ()):
                found.add(f"{addr.get('local')}/{addr.get('prefixlen')}")
    return found


def create_node_links(names: Names, indexes: Iterable[int]) -> None:
    """Per node: a named netns and a veth pair (``eth0`` inside, a bridge port outside)."""
    commands: list[str] = []
    for i in indexes:
        ns, veth = names.netns(i), names.veth(i)
        commands += [
            f"netns add {ns}",
            f"link add name {veth} type veth peer name eth0 netns {ns}",
            f"link set dev {veth} master {names.bridge} up",
        ]
    if commands:
        ip_batch(commands)


def configure_node_netns(spec: VcSpec, names: Names, index: int) -> None:
    """Inside the node's netns: ``lo`` and ``eth0`` up, the address, the route out if any."""
    commands = [
        "link set dev lo up",
        f"address add {spec.address(index)}/{spec.network.prefixlen} dev eth0",
        "link set dev eth0 up",
    ]
    if spec.gateway:
        commands.append(f"route add default via {spec.gateway_address}")
    ip_batch(commands, netns=names.netns(index))


def reattach_ports(names: Names, indexes: Iterable[int]) -> list[str]:
    """Put host veths back on the bridge (after the bridge was recreated); returns them."""
    present = links()
    fixed = [
        names.veth(i)
        for i in indexes
        if names.veth(i) in present and present[names.veth(i)].master != names.bridge
    ]
    if fixed:
        ip_batch(f"link set dev {v} master {names.bridge} up" for v in fixed)
    return fixed


def attach_netns(name: str, pid: int) -> None:
    """Give a name back to the netns of a running process (``ip netns attach``)."""
    system.run(["ip", "netns", "attach", name, str(pid)], what=f"ip netns attach {name}")


def delete_nodes(veths: Iterable[str], netns: Iterable[str], timeout: float = 2.0) -> None:
    """Delete netns names and veth pairs; what is already gone is skipped.

    The names go first: once its processes are gone, a namespace is destroyed
    by the kernel in the background, and its end of each veth pair with it --
    in one batch for all namespaces, whereas deleting veths one by one costs
    an RCU grace period each (50 nodes: 1 s instead of 0.1 s).
    """
    veths, netns = list(veths), list(netns)
    gone = netns_names()
    doomed = [n for n in netns if n in gone]
    if doomed:
        ip_batch([f"netns delete {n}" for n in doomed], force=True)
    deadline = time.monotonic() + (timeout if doomed else 0.0)
    while True:
        present = links()
        left = [v for v in veths if v in present]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if left:  # still in use (its namespace is alive elsewhere): delete the pair directly
        ip_batch([f"link delete dev {v}" for v in left], force=True)
    still = [v for v in veths if v in links()] + [n for n in netns if n in netns_names()]
    if still:
        raise DriverError(f"could not delete {', '.join(still)}")


def delete_bridge(bridge: str) -> None:
    if bridge in links():
        ip_batch([f"link delete dev {bridge}"])


def enable_ip_forward() -> bool:
    """Turn IPv4 forwarding on (host-wide) for gateway clusters; ``True`` if it was off."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    if path.read_text().strip() == "1":
        return False
    path.write_text("1\n")
    return True
