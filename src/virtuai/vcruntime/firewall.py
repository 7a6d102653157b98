"""Isolation of virtual clusters with nftables: one table, ``inet virtuai``.

Shared by every cluster (and every runtime prefix), created idempotently::

    table inet virtuai {
      set bridges { type ifname }                      # every VC bridge
      map in_vc   { type ifname : verdict }            # bridge -> jump <bridge>-in
      map from_vc { type ifname : verdict }            # bridge -> jump <bridge>-from
      map to_vc   { type ifname : verdict }            # bridge -> jump <bridge>-to
      map nat_vc  { type ifname : verdict }            # bridge -> jump <bridge>-nat (gateway)
      map out_vc  { type ifname : verdict }            # bridge -> jump <bridge>-out
      chain input       { hook input, filter - 10:   iifname vmap @in_vc }
      chain output      { hook output, filter - 10:  oifname vmap @out_vc }
      chain forward     { hook forward, filter - 10: iifname vmap @from_vc; oifname vmap @to_vc }
      chain postrouting { hook postrouting, srcnat - 10: iifname vmap @nat_vc }
    }

Per cluster (bridge ``B``), its own chains and one element in each map, so a
cluster's rules are added and removed without touching anyone else's::

    chain B-in   { ct state established,related accept; drop }      # nodes -> host: nothing
    chain B-out  { ct state established,related accept; drop }      # host -> nodes: nothing
    chain B-from { oifname B accept;                                 # peers (br_netfilter)
                   [gateway: oifname @bridges drop; accept]          # other VCs: never
                   [no gateway: drop] }                              # nowhere else
    chain B-to   { iifname B accept; ct state established,related accept; drop }
    chain B-nat  { oifname != @bridges masquerade }                  # gateway only

Bridged traffic between two nodes of one cluster only meets these hooks when
``br_netfilter`` is loaded (``net.bridge.bridge-nf-call-iptables=1``), and then
with ``iifname``/``oifname`` = the bridge: ``oifname B accept`` keeps it
flowing either way.  Drops are final for the packet; accepts here do not
override another table's drop (a host firewall dropping forwarded traffic
blocks gateway clusters too).

Host -> nodes is filtered like cluster -> cluster: a process of the host (any
tenant's job, any local user) opening a connection to a node leaves through the
bridge in the *output* hook, and ``B-out`` drops it.  The platform never needs
such a connection: it enters nodes through their namespaces (``vc exec``,
tasks), not over the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from virtuai.vcruntime import system
from virtuai.vcruntime.naming import NFT_KINDS

TABLE = "virtuai"
FAMILY = "inet"
T = f"{FAMILY} {TABLE}"
MAPS = {"in": "in_vc", "from": "from_vc", "to": "to_vc", "out": "out_vc", "nat": "nat_vc"}


@dataclass(slots=True)
class NftState:
    """What the table holds now: chain names, set elements and map keys."""

    exists: bool = False
    chains: set[str] = field(default_factory=set)
    rules: dict[str, int] = field(default_factory=dict)  # chain -> number of rules
    bridges: set[str] = field(default_factory=set)
    map_keys: dict[str, set[str]] = field(default_factory=dict)  # map name -> keys


def nft(script: str, what: str) -> None:
    system.run(["nft", "-f", "-"], input=script, what=what)


def state() -> NftState:
    proc = system.run(["nft", "-j", "list", "table", FAMILY, TABLE], check=False)
    current = NftState()
    if proc.returncode != 0:
        return current  # no table (yet)
    current.exists = True
    for item in json.loads(proc.stdout or "{}").get("nftables", []):
        if "chain" in item:
            current.chains.add(str(item["chain"]["name"]))
        if "rule" in item:
            chain = str(item["rule"]["chain"])
            current.rules[chain] = current.rules.get(chain, 0) + 1
        for key in ("set", "map"):
            if key not in item:
                continue
            obj = item[key]
            elements = obj.get("elem", [])
            keys = {str(e[0] if isinstance(e, list) else e) for e in elements}
            if key == "set" and obj["name"] == "bridges":
                current.bridges = keys
            elif key == "map":
                current.map_keys[str(obj["name"])] = keys
    return current


def base_script() -> str:
    """The shared table, its sets/maps and base chains; safe to apply again and again."""
    lines = [
        f"add table {T}",
        f"add set {T} bridges {{ type ifname; }}",
        *(f"add map {T} {m} {{ type ifname : verdict; }}" for m in MAPS.values()),
        f"add chain {T} input {{ type filter hook input priority filter - 10; policy accept; }}",
        f"add chain {T} forward "
        "{ type filter hook forward priority filter - 10; policy accept; }",
        f"add chain {T} output {{ type filter hook output priority filter - 10; policy accept; }}",
        f"add chain {T} postrouting "
        "{ type nat hook postrouting priority srcnat - 10; policy accept; }",
        f"flush chain {T} input",
        f"add rule {T} input iifname vmap @{MAPS['in']}",
        f"flush chain {T} output",
        f"add rule {T} output oifname vmap @{MAPS['out']}",
        f"flush chain {T} forward",
        f"add rule {T} forward iifname vmap @{MAPS['from']}",
        f"add rule {T} forward oifname vmap @{MAPS['to']}",
        f"flush chain {T} postrouting",
        f"add rule {T} postrouting iifname vmap @{MAPS['nat']}",
    ]
    return "\n".join(lines) + "\n"


def vc_script(bridge: str, gateway: bool, current: NftState) -> str:
    """One transaction that (re)writes a cluster's chains and elements.

    Its chains are flushed and refilled, and what it no longer needs (the NAT
    chain of a cluster that lost its gateway) is deleted, so applying it
    twice, or after a change of ``gateway``, gives exactly the wanted rules.
    """
    b = f'"{bridge}"'
    chain = {kind: f"{bridge}-{kind}" for kind in NFT_KINDS}
    kinds = _kinds(gateway)
    lines: list[str] = []
    for stale in (k for k in NFT_KINDS if k not in kinds):
        if bridge in current.map_keys.get(MAPS[stale], set()):
            lines.append(f"delete element {T} {MAPS[stale]} {{ {b} }}")
        if chain[stale] in current.chains:
            lines.append(f"delete chain {T} {chain[stale]}")
    for k in kinds:
        lines += [f"add chain {T} {chain[k]}", f"flush chain {T} {chain[k]}"]
    lines += [
        f"add rule {T} {chain['in']} ct state established,related accept",
        f"add rule {T} {chain['in']} drop",
        f"add rule {T} {chain['from']} oifname {b} accept",
    ]
    if gateway:
        lines += [
            f"add rule {T} {chain['from']} oifname @bridges drop",
            f"add rule {T} {chain['from']} accept",
            f"add rule {T} {chain['nat']} oifname != @bridges masquerade",
        ]
    else:
        lines.append(f"add rule {T} {chain['from']} drop")
    lines += [
        f"add rule {T} {chain['out']} ct state established,related accept",
        f"add rule {T} {chain['out']} drop",
        f"add rule {T} {chain['to']} iifname {b} accept",
        f"add rule {T} {chain['to']} ct state established,related accept",
        f"add rule {T} {chain['to']} drop",
        f"add element {T} bridges {{ {b} }}",
    ]
    lines += [f"add element {T} {MAPS[k]} {{ {b} : jump {chain[k]} }}" for k in kinds]
    return "\n".join(lines) + "\n"


def vc_delete_script(bridge: str, current: NftState) -> str:
    """Delete exactly what exists of a cluster: map elements first, then its chains."""
    b = f'"{bridge}"'
    lines = [
        f"delete element {T} {name} {{ {b} }}"
        for name in MAPS.values()
        if bridge in current.map_keys.get(name, set())
    ]
    if bridge in current.bridges:
        lines.append(f"delete element {T} bridges {{ {b} }}")
    own = {f"{bridge}-{kind}" for kind in NFT_KINDS}
    lines += [f"delete chain {T} {c}" for c in sorted(current.chains & own)]
    return "\n".join(lines) + "\n" if lines else ""


def apply_vc(bridge: str, gateway: bool) -> None:
    nft(base_script(), "creating the nftables table inet virtuai")
    nft(vc_script(bridge, gateway, state()), f"writing the firewall rules of {bridge}")


def remove_vc(bridges: Iterable[str], current: NftState | None = None) -> None:
    current = state() if current is None else current
    script = "".join(vc_delete_script(b, current) for b in bridges)
    if script:
        nft(script, "removing firewall rules")


def vc_rules_present(bridge: str, gateway: bool, current: NftState) -> bool:
    """Whether the cluster's chains, elements and base chains are all there, rule for rule
    (counted: a flushed or edited chain is noticed; its exact content is not compared)."""
    expected = expected_rules(bridge, gateway)
    return (
        bridge in current.bridges
        and all(current.rules.get(chain, 0) == n for chain, n in expected.items())
        and all(bridge in current.map_keys.get(MAPS[k], set()) for k in _kinds(gateway))
        and all(current.rules.get(base, 0) == n for base, n in BASE_RULES.items())
        and not (not gateway and f"{bridge}-nat" in current.chains)
    )


BASE_RULES = {"input": 1, "output": 1, "forward": 2, "postrouting": 1}


def _kinds(gateway: bool) -> list[str]:
    return ["in", "from", "to", "out"] + (["nat"] if gateway else [])


def expected_rules(bridge: str, gateway: bool) -> dict[str, int]:
    """Rules per chain of a cluster, counted from the script that writes them."""
    counts: dict[str, int] = {}
    for line in vc_script(bridge, gateway, NftState()).splitlines():
        if line.startswith(f"add rule {T} "):
            chain = line.split()[4]
            counts[chain] = counts.get(chain, 0) + 1
    return counts
