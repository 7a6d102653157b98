"""Where a job's task inside a virtual cluster runs: a virtual node, on a physical node.

A job in a cluster is placed by ``control.vclusters`` onto the cluster's
nodes, named by their hostnames (``<cluster>-<i>``).  To launch a task the
life-cycle loop needs three more facts, all derived from the cluster's row:
the physical node hosting virtual node ``i`` (its driver launches the task),
the node's address (``MASTER_ADDR`` of a gang is task 0's node), and the
runtime's reference to the running node (``VnodeLocator``), passed to the
local driver as ``TaskSpec.vnode`` (a typed ``host.sandbox.VirtualNode``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from virtuai.domain.vcluster import vnode_hostname
from virtuai.host.sandbox import JobImage
from virtuai.store.inventory import placement_from_json
from virtuai.store.models import VirtualClusterRow
from virtuai.vcruntime import VnodeRef, ipam

VC_WORKDIR = "/shared"  # the cluster's shared volume, the default working directory of its jobs
# MASTER_PORT of a gang in a cluster: every node has a network namespace of its own, so
# a port only has to differ from other jobs' in the same cluster (the job id picks one).
VC_MASTER_PORT_BASE = 20000
VC_MASTER_PORT_SPAN = 20000


class VnodeLocator(Protocol):
    """What the life cycle needs of the runtime (``VcRuntime``): a running node's reference,
    and an image for the sandbox of a job that names one (``submit --image``)."""

    def vnode(self, vc_id: str, index: int) -> VnodeRef: ...

    def job_image(self, name: str) -> JobImage: ...


@dataclass(frozen=True, slots=True)
class VnodeTarget:
    runtime_id: str  # the cluster's id in the runtime
    index: int
    hostname: str
    address: str
    host_node: str  # the physical node the cluster's placement put it on


def vnode_targets(vc: VirtualClusterRow) -> dict[str, VnodeTarget]:
    """The cluster's nodes by hostname (empty while it has no placement)."""
    subnet = ipam.parse_subnet(vc.subnet)
    targets = {}
    for placement in placement_from_json(vc.placement):
        hostname = vnode_hostname(vc.name, placement.index)
        targets[hostname] = VnodeTarget(
            runtime_id=vc.runtime_id,
            index=placement.index,
            hostname=hostname,
            address=str(ipam.node_address(subnet, placement.index)),
            host_node=placement.node,
        )
    return targets


def vc_master_port(job_id: int) -> int:
    return VC_MASTER_PORT_BASE + job_id % VC_MASTER_PORT_SPAN
