"""What the platform asks of the runtime (``VcSpec``) and what it reports (``VcStatus``).

Pure data and pure text generators (``/etc/hosts``, the hostfile, the node's
environment); no I/O.  The control plane builds a ``VcSpec`` from its
database row, with resources already placed by the scheduler: per node a CPU
quota, a memory limit and the concrete GPU indices.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from virtuai.domain.tenancy import NAME_MAX, validate_name
from virtuai.errors import InvalidRequest
from virtuai.vcruntime import ipam
from virtuai.vcruntime.naming import MAX_NODE_INDEX, validate_vc_id

HOSTFILE_PATH = "/etc/virtuai/hostfile"  # inside every node
NODE_ENV_PATH = "/etc/virtuai/node.env"
SHARED_PATH = "/shared"


class DesiredState(enum.StrEnum):
    RUNNING = "running"
    SUSPENDED = "suspended"
    DELETED = "deleted"


class NodeState(enum.StrEnum):
    RUNNING = "running"  # init alive and every kernel object in place
    DEGRADED = "degraded"  # init alive but an object is missing (netns name, mount, ...)
    DEAD = "dead"  # should run, but its init is gone
    STOPPED = "stopped"  # not running, as wanted (suspended)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node's placement: what the scheduler gave it on this machine."""

    cpu_milli: int = 0  # CPU quota; 0 = no limit
    memory: int = 0  # bytes; 0 = no limit
    gpu_indices: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_milli": self.cpu_milli,
            "memory": self.memory,
            "gpu_indices": list(self.gpu_indices),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeSpec:
        return cls(
            int(data.get("cpu_milli", 0)),
            int(data.get("memory", 0)),
            tuple(int(i) for i in data.get("gpu_indices", ())),
        )


@dataclass(frozen=True, slots=True)
class VcSpec:
    """A virtual cluster as the runtime builds it.

    ``id`` is the platform's stable identity of the cluster (it names the
    state directory and, hashed, the kernel objects); ``name`` is the DNS
    label users see: node ``i`` has the hostname ``<name>-<i>``.
    """

    id: str
    name: str
    tenant: str
    subnet: str  # a /24 (or smaller) from ipam.allocate_subnet
    nodes: tuple[NodeSpec, ...]
    image: str = "host"
    gateway: bool = False  # outbound NAT and a default route; otherwise no route out
    user: str | None = None  # Unix account of workloads; None: the tenant's (vai-<tenant>)
    labels: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> VcSpec:
        """Raises ``InvalidRequest`` naming the field; returns ``self``."""
        validate_vc_id(self.id)
        validate_name(self.name, field="name")
        validate_name(self.tenant, field="tenant")
        validate_name(self.image, field="image")
        if not self.nodes:
            raise InvalidRequest("a virtual cluster needs at least one node", field="nodes")
        net = self.network
        limit = min(ipam.max_nodes(net), MAX_NODE_INDEX + 1)
        if len(self.nodes) > limit:
            raise InvalidRequest(
                f"{len(self.nodes)} nodes do not fit in {net} (at most {limit})", field="nodes"
            )
        if len(self.hostname(len(self.nodes) - 1)) > NAME_MAX:
            raise InvalidRequest(
                f"name {self.name!r} is too long for {len(self.nodes)} node hostnames "
                f"(<name>-<index> must fit in {NAME_MAX} characters)",
                field="name",
            )
        for i, node in enumerate(self.nodes):
            where = f"nodes[{i}]"
            if node.cpu_milli < 0 or node.memory < 0:
                raise InvalidRequest(f"{where}: negative resources", field=where)
            if 0 < node.memory < 16 * 2**20:
                raise InvalidRequest(f"{where}: memory below 16Mi cannot run a node", field=where)
            if len(set(node.gpu_indices)) != len(node.gpu_indices) or any(
                g < 0 for g in node.gpu_indices
            ):
                raise InvalidRequest(f"{where}: invalid GPU indices", field=where)
        if self.user is not None and (not self.user or "/" in self.user or self.user == "root"):
            raise InvalidRequest(f"user {self.user!r} cannot run workloads", field="user")
        return self

    @property
    def network(self) -> IPv4Network:
        return ipam.parse_subnet(self.subnet)

    @property
    def gateway_address(self) -> IPv4Address:
        return ipam.gateway_address(self.network)

    def hostname(self, index: int) -> str:
        return f"{self.name}-{index}"

    def address(self, index: int) -> IPv4Address:
        return ipam.node_address(self.network, index)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "tenant": self.tenant,
            "subnet": self.subnet,
            "nodes": [n.to_json() for n in self.nodes],
            "image": self.image,
            "gateway": self.gateway,
            "user": self.user,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VcSpec:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            tenant=str(data["tenant"]),
            subnet=str(data["subnet"]),
            nodes=tuple(NodeSpec.from_json(n) for n in data["nodes"]),
            image=str(data.get("image", "host")),
            gateway=bool(data.get("gateway", False)),
            user=data.get("user"),
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    index: int
    hostname: str
    address: str
    state: NodeState
    pid: int | None = None  # the node's init (pid 1 inside), as the host sees it
    problems: tuple[str, ...] = ()  # plain words: what is missing or wrong


@dataclass(frozen=True, slots=True)
class VcStatus:
    id: str
    desired: DesiredState | None  # None: the runtime has no record of this cluster
    nodes: tuple[NodeStatus, ...]

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.state == NodeState.RUNNING for n in self.nodes)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What ``reconcile`` found and did, in plain words (empty: nothing to do)."""

    actions: tuple[str, ...] = ()


# -- files generated into every node ------------------------------------------------------


def hosts_file(spec: VcSpec) -> str:
    """``/etc/hosts`` of every node: loopback and every peer, by name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{spec.address(i)}\t{spec.hostname(i)}" for i in range(len(spec.nodes))]
    return "\n".join(lines) + "\n"


def hostfile(spec: VcSpec) -> str:
    """``VIRTUAI_HOSTFILE``: one line per node, ``<hostname> <address>``, in index order.

    The first column alone is an MPI-style hostfile (``cut -d' ' -f1``).
    """
    return "".join(f"{spec.hostname(i)} {spec.address(i)}\n" for i in range(len(spec.nodes)))


def node_env(spec: VcSpec, index: int) -> dict[str, str]:
    """Variables every command in node ``index`` gets (also in ``/etc/virtuai/node.env``)."""
    node = spec.nodes[index]
    return {
        "HOSTNAME": spec.hostname(index),
        "VIRTUAI_VC": spec.name,
        "VIRTUAI_VC_ID": spec.id,
        "VIRTUAI_NODE_INDEX": str(index),
        "VIRTUAI_NODE_COUNT": str(len(spec.nodes)),
        "VIRTUAI_NODE_ADDRESS": str(spec.address(index)),
        "VIRTUAI_HOSTFILE": HOSTFILE_PATH,
        "VIRTUAI_SHARED": SHARED_PATH,
        "VIRTUAI_CPU_MILLI": str(node.cpu_milli),
        "VIRTUAI_MEMORY": str(node.memory),
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in node.gpu_indices),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def env_file(env: Mapping[str, str]) -> str:
    """``KEY=value`` lines a POSIX shell can source (values single-quoted)."""
    quoted = {k: "'" + v.replace("'", "'\\''") + "'" for k, v in env.items()}
    return "".join(f"{k}={v}\n" for k, v in quoted.items())
