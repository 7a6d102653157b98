"""TCP ports of this machine that only one Unix user may connect to: an nftables table.

The platform's own workloads that serve HTTP (services' replicas) listen on a
TCP port of the host, where any local process could connect and skip the
proxy's authentication.  This table refuses every new connection to a
*guarded* port except those opened by sockets of one user (the server's)::

    table inet <name> {                        # one per installation
      set ports { type inet_service; }         # the guarded ports
      chain output {                           # this machine's processes
        type filter hook output priority filter - 5; policy accept;
        oifname "lo" tcp dport @ports tcp flags & (syn | ack) == syn
          meta skuid != <uid> reject with tcp reset
      }
      chain input {                            # other machines, virtual clusters
        type filter hook input priority filter - 5; policy accept;
        iifname != "lo" tcp dport @ports tcp flags & (syn | ack) == syn
          reject with tcp reset
      }
    }

A connection to any local address (loopback or the machine's own) leaves
through ``lo``, where the socket's owner is known (``meta skuid``); one from
another machine or a virtual cluster's bridge comes in on another interface
and is refused whoever sent it.  Only the opening SYN is matched (no
conntrack needed): answers and established connections pass.  Refusals are
TCP resets, so a client sees "connection refused" at once.

The guard is *one user*: the server.  When it runs as root, that is root;
any root process can also change the firewall, so refusing root would add
nothing.  Tenants' tasks never run as root (``host.users``).

Names: ``table_name(installation_id)``, so two installations on one host keep
their own sets; ``sync`` makes the set exactly the given ports (what a
restarted server does first, so no stale port outlives its workload).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable

from virtuai.errors import DriverError

FAMILY = "inet"
SET = "ports"
_TIMEOUT_S = 30


def table_name(installation_id: str) -> str:
    """The installation's table (``virtuai_ports_<id>``; ``virtuai_ports`` without an id)."""
    return f"virtuai_ports_{installation_id}" if installation_id else "virtuai_ports"


def unavailable() -> str | None:
    """Why this process cannot guard ports, or None."""
    if os.geteuid() != 0:
        return "the server does not run as root"
    if shutil.which("nft") is None:
        return "nft (Debian package nftables) is not installed"
    return None


class PortGuard:
    """The guarded ports of one installation on this machine (needs root and ``nft``)."""

    def __init__(self, table: str, uid: int | None = None, also: int | None = None) -> None:
        self.table = table
        self.uid = os.geteuid() if uid is None else uid
        # ``proxy.engine: nginx``: nginx's workers' own user passes too (``proxy.nginx``).
        self._who = str(self.uid) if also is None else f"{{ {self.uid}, {also} }}"
        self._t = f"{FAMILY} {table}"

    def setup(self) -> None:
        """Create the table, its set and its chains; rewrite the rules.  Idempotent; the
        set's ports are kept."""
        t = self._t
        syn = "tcp flags & (syn | ack) == syn"
        self._nft(
            f"add table {t}\n"
            f"add set {t} {SET} {{ type inet_service; }}\n"
            f"add chain {t} output {{ type filter hook output priority filter - 5; "
            "policy accept; }\n"
            f"add chain {t} input {{ type filter hook input priority filter - 5; "
            "policy accept; }\n"
            f"flush chain {t} output\n"
            f"flush chain {t} input\n"
            f'add rule {t} output oifname "lo" tcp dport @{SET} {syn} '
            f"meta skuid != {self._who} reject with tcp reset\n"
            f'add rule {t} input iifname != "lo" tcp dport @{SET} {syn} reject with tcp reset\n',
            f"creating the nftables table {self.table}",
        )

    def add(self, port: int) -> None:
        self._nft(f"add element {self._t} {SET} {{ {_port(port)} }}\n", f"guarding port {port}")

    def exists(self) -> bool:
        return self._run(["nft", "list", "table", FAMILY, self.table], check=False).returncode == 0

    def ports(self) -> set[int]:
        proc = self._run(["nft", "-j", "list", "set", FAMILY, self.table, SET], check=False)
        if proc.returncode != 0:
            return set()
        found: set[int] = set()
        for item in json.loads(proc.stdout or "{}").get("nftables", []):
            for element in item.get("set", {}).get("elem", []):
                if isinstance(element, int):
                    found.add(element)
                elif isinstance(element, dict) and "range" in element:  # never added by us
                    low, high = element["range"]
                    found.update(range(int(low), int(high) + 1))
        return found

    def sync(self, wanted: Iterable[int]) -> tuple[set[int], set[int]]:
        """Make the set exactly ``wanted``, in one transaction; ``(added, removed)``."""
        want = {_port(p) for p in wanted}
        have = self.ports()
        added, removed = want - have, have - want
        lines = [f"delete element {self._t} {SET} {{ {p} }}" for p in sorted(removed)]
        lines += [f"add element {self._t} {SET} {{ {p} }}" for p in sorted(added)]
        if lines:
            self._nft("\n".join(lines) + "\n", "updating the guarded ports")
        return added, removed

    def drop(self) -> None:
        """Delete the whole table (tests; an uninstall)."""
        self._run(["nft", "delete", "table", FAMILY, self.table], check=False)

    def _nft(self, script: str, what: str) -> None:
        self._run(["nft", "-f", "-"], input=script, what=what)

    @staticmethod
    def _run(
        argv: list[str], *, input: str | None = None, check: bool = True, what: str = ""
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DriverError(f"{what or argv[0]}: {error}") from error
        if check and proc.returncode != 0:
            raise DriverError(f"{what}: {proc.stderr.strip() or proc.returncode}")
        return proc


def free_port(candidates: Iterable[int], host: str = "127.0.0.1") -> int | None:
    """The first of ``candidates`` nobody has bound on ``host`` right now (a wildcard bind
    of the port counts), or None."""
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    return None


def _port(port: int) -> int:
    if not 1 <= int(port) <= 65535:
        raise DriverError(f"port {port} is not a TCP port")
    return int(port)


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range (what ``bind(0)`` and outgoing connections use);
    Linux's default when it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(part) for part in f.read().split()[:2])
    except (OSError, ValueError):
        return (32768, 60999)
    return (low, high)
