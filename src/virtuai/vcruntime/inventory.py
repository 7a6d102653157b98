"""Every kernel object and directory the runtime can leave behind, found from the system.

One function, ``take``, looks at the system itself (not at our records):
named network namespaces, bridges and veths, nftables chains and map
elements, node cgroups, mounts and directories under the state directory.
Each object is attributed to a cluster by its name (the tag of
``naming.py``) or by its path (the cluster id).  The same inventory serves

- ``VcRuntime.objects_of(vc)``: what exists of one cluster (tests assert it is
  empty after ``delete``; ``observe`` reads it);
- ``VcRuntime.leaked_objects(known)``: what belongs to no known cluster
  (``virtuai doctor``), and ``remove_leaked`` (``virtuai doctor --fix``).

Only objects with the runtime's prefix and below its state directory are
ever listed, so another runtime (another prefix: parallel test runs) is
never touched.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from virtuai.errors import DriverError
from virtuai.vcruntime import firewall, network, storage, system
from virtuai.vcruntime.naming import Parser
from virtuai.vcruntime.nodes import NodeCgroups
from virtuai.vcruntime.storage import vcs_root


class Kind(enum.StrEnum):
    CGROUP = "cgroup"  # holds the node's processes: removing it kills them
    MOUNT = "mount"
    NETNS = "netns"
    VETH = "veth"
    BRIDGE = "bridge"
    NFT = "nft"  # a chain, or an element of the shared set/maps
    DIR = "dir"


# veths and netns names go together (see network.delete_nodes), hence NETNS is not listed.
REMOVAL_ORDER = (Kind.CGROUP, Kind.MOUNT, Kind.VETH, Kind.BRIDGE, Kind.NFT, Kind.DIR)


@dataclass(frozen=True, slots=True)
class KernelObject:
    kind: Kind
    name: str  # interface / netns / chain name, cgroup key, or absolute path
    tag: str | None = None  # the cluster's tag, for objects named after it
    vc_id: str | None = None  # the cluster's id, for objects found by path

    def describe(self) -> str:
        return f"{self.kind.value} {self.name}"


def take(prefix: str, state_dir: Path, cgroups: NodeCgroups | None) -> list[KernelObject]:
    parse = Parser(prefix)
    found: list[KernelObject] = []
    for ns in sorted(network.netns_names()):
        if (parsed := parse.netns(ns)) is not None:
            found.append(KernelObject(Kind.NETNS, ns, parsed[0]))
    for name, link in sorted(network.links().items()):
        if link.kind == "bridge" and (tag := parse.bridge(name)) is not None:
            found.append(KernelObject(Kind.BRIDGE, name, tag))
        elif (parsed_veth := parse.veth(name)) is not None:
            found.append(KernelObject(Kind.VETH, name, parsed_veth[0]))
    found += _nft_objects(parse)
    if cgroups is not None:
        for key in sorted(cgroups.list_keys()):
            if (parsed_cg := parse.cgroup(key)) is not None:
                found.append(KernelObject(Kind.CGROUP, key, parsed_cg[0]))
    root = vcs_root(state_dir)
    for mountpoint, _ in system.mounts_under(root):
        with contextlib.suppress(ValueError, IndexError):
            vc_id = mountpoint.relative_to(root).parts[0]
            found.append(KernelObject(Kind.MOUNT, str(mountpoint), vc_id=vc_id))
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                found.append(KernelObject(Kind.DIR, str(entry), vc_id=entry.name))
            elif entry.name.startswith(".") and entry.is_dir():
                found.append(KernelObject(Kind.DIR, str(entry)))  # staging left by a crash
    images = state_dir / "images"
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(images.iterdir()):
            if entry.name.startswith(".import-"):
                found.append(KernelObject(Kind.DIR, str(entry)))
    return found


def _nft_objects(parse: Parser) -> list[KernelObject]:
    current = firewall.state()
    found: list[KernelObject] = []
    chain_tags: set[str] = set()
    for chain in sorted(current.chains):
        if (tag := parse.chain(chain)) is not None:
            chain_tags.add(tag)
            found.append(KernelObject(Kind.NFT, chain, tag))
    stray = set(current.bridges)
    for keys in current.map_keys.values():
        stray |= keys
    for bridge in sorted(stray):
        tag = parse.bridge(bridge)
        if tag is not None and tag not in chain_tags:
            found.append(KernelObject(Kind.NFT, f"elements of {bridge}", tag))
    return found


def remove(
    objects: Iterable[KernelObject],
    cgroups: NodeCgroups | None,
    prefix: str,
    *,
    strict: bool = True,
) -> list[str]:
    """Remove objects in dependency order: processes (cgroups) first, directories last.

    Returns what could not be removed; with ``strict``, raises ``DriverError`` instead.
    """
    by_kind: dict[Kind, list[KernelObject]] = {}
    for obj in objects:
        by_kind.setdefault(obj.kind, []).append(obj)
    errors: list[str] = []

    def attempt(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (DriverError, OSError) as exc:
            errors.append(f"{what}: {exc}")

    if Kind.NETNS in by_kind:
        by_kind.setdefault(Kind.VETH, [])
    for kind in REMOVAL_ORDER:
        group = by_kind.get(kind)
        if group is None:
            continue
        if kind == Kind.CGROUP and cgroups is not None:
            for o in group:
                attempt(o.describe(), partial(cgroups.remove, o.name))
        elif kind == Kind.MOUNT:
            for o in group:
                node = storage.NodePaths(Path(o.name).parent)
                attempt(o.describe(), partial(storage.unmount_overlay, node))
        elif kind == Kind.VETH:
            veths = [o.name for o in group]
            netns = [o.name for o in by_kind.get(Kind.NETNS, [])]
            attempt("netns/veths", partial(network.delete_nodes, veths, netns))
        elif kind == Kind.BRIDGE:
            for o in group:
                attempt(o.describe(), partial(network.delete_bridge, o.name))
        elif kind == Kind.NFT:
            bridges = sorted({f"{prefix}-{o.tag}" for o in group if o.tag})
            attempt("firewall rules", partial(firewall.remove_vc, bridges))
        elif kind == Kind.DIR:
            for o in group:
                attempt(o.describe(), partial(storage.remove_tree, Path(o.name)))
    if errors and strict:
        raise DriverError("cannot remove " + "; ".join(errors))
    return errors
