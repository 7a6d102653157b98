"""Names of the kernel objects of virtual clusters, and how to read them back.

Every object carries the runtime's *prefix* (1-3 characters, ``vai`` by
default) and an 8-hex-digit *tag* (a hash of the cluster's id), so that

- names fit the kernel's 15-character limit on interface names;
- ``leaked_objects`` can attribute any object to the cluster that made it,
  and never touches objects of another prefix (tests use a random one, so a
  developer's real clusters and parallel test runs are never touched);
- the same id always gives the same names (a restarted server finds them).

====================  =======================  ===========================
object                name                     example
====================  =======================  ===========================
bridge (per VC)       ``<p>-<tag>``            ``vai-1a2b3c4d``
netns (per node)      ``<p>-<tag>-<i>``        ``vai-1a2b3c4d-0``
host veth (per node)  ``<p><tag>-<i>``         ``vai1a2b3c4d-0`` (peer: eth0)
nft chains (per VC)   ``<p>-<tag>-<kind>``     ``vai-1a2b3c4d-from``
cgroup (per node)     ``<parent>/<p>-<tag>-<i>``  ``virtuai-vcs/vai-1a2b3c4d-0``
====================  =======================  ===========================
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from virtuai.errors import InvalidRequest

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,2}$")
VC_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62})$")
IFNAMSIZ = 15
MAX_NODE_INDEX = 999  # three digits keep the host veth name within 15 characters
NFT_KINDS = ("from", "to", "in", "out", "nat")


def validate_prefix(prefix: str) -> str:
    if not PREFIX_RE.fullmatch(prefix):
        raise InvalidRequest(
            f"prefix {prefix!r}: use 1-3 lower-case letters or digits, starting with a letter",
            field="prefix",
        )
    return prefix


def validate_vc_id(vc_id: str) -> str:
    if not VC_ID_RE.fullmatch(vc_id):
        raise InvalidRequest(
            f"virtual cluster id {vc_id!r}: use 1-63 lower-case letters, digits, '-' and '_'",
            field="id",
        )
    return vc_id


def vc_tag(vc_id: str) -> str:
    return hashlib.sha256(vc_id.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Names:
    """The kernel names of one virtual cluster."""

    prefix: str
    tag: str

    @classmethod
    def of(cls, prefix: str, vc_id: str) -> Names:
        return cls(validate_prefix(prefix), vc_tag(validate_vc_id(vc_id)))

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-{self.tag}"

    def netns(self, index: int) -> str:
        return f"{self.prefix}-{self.tag}-{index}"

    def veth(self, index: int) -> str:
        return f"{self.prefix}{self.tag}-{index}"

    def chain(self, kind: str) -> str:
        return f"{self.prefix}-{self.tag}-{kind}"

    def cgroup(self, index: int) -> str:
        """The node's cgroup, a child of the runtime's parent cgroup."""
        return f"{self.prefix}-{self.tag}-{index}"


class Parser:
    """Reads names back: which tag (cluster) and node index an object belongs to."""

    def __init__(self, prefix: str) -> None:
        p = re.escape(validate_prefix(prefix))
        self._bridge = re.compile(rf"^{p}-([0-9a-f]{{8}})$")
        self._netns = re.compile(rf"^{p}-([0-9a-f]{{8}})-(\d{{1,3}})$")
        self._veth = re.compile(rf"^{p}([0-9a-f]{{8}})-(\d{{1,3}})$")
        self._chain = re.compile(rf"^{p}-([0-9a-f]{{8}})-({'|'.join(NFT_KINDS)})$")

    def bridge(self, name: str) -> str | None:
        m = self._bridge.match(name)
        return m.group(1) if m else None

    def netns(self, name: str) -> tuple[str, int] | None:
        m = self._netns.match(name)
        return (m.group(1), int(m.group(2))) if m else None

    def veth(self, name: str) -> tuple[str, int] | None:
        m = self._veth.match(name)
        return (m.group(1), int(m.group(2))) if m else None

    def cgroup(self, name: str) -> tuple[str, int] | None:
        return self.netns(name)

    def chain(self, name: str) -> str | None:
        m = self._chain.match(name)
        return m.group(1) if m else None
