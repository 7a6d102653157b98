"""The kernel-level machinery of virtual clusters (VirtuaLinux's idea on one Linux host).

A *virtual cluster* is N nodes with hostnames, a private network, a shared
volume and a root file system each that may be changed freely, made in
constant time and space from one image:

- ``images``: read-only root file systems (the host's own, or imported);
- ``storage``: per node an overlayfs root over the image (copy on write);
- ``network``/``firewall``: per cluster a bridge, per node a netns and a veth
  pair; nftables keeps clusters apart and away from the host's services;
- ``nodes``: per node a long-lived init (bubblewrap: pid, uts and ipc
  namespaces) in a cgroup with the node's limits, and ``exec`` into it;
- ``runtime``: ``VcRuntime`` -- create, suspend, resume (remap), delete,
  observe, reconcile, and the leak inventory for ``virtuai doctor``.

No database, no API: the control plane records desired state and calls
``VcRuntime``; everything here is idempotent and rolls back on failure.
"""

from virtuai.vcruntime.config import RuntimeConfig
from virtuai.vcruntime.images import Image, ImageStore
from virtuai.vcruntime.inventory import KernelObject, Kind
from virtuai.vcruntime.ipam import allocate_subnet, gateway_address, node_address
from virtuai.vcruntime.runtime import ExecResult, VcRuntime
from virtuai.vcruntime.spec import (
    DesiredState,
    NodeSpec,
    NodeState,
    NodeStatus,
    ReconcileReport,
    VcSpec,
    VcStatus,
    hostfile,
    hosts_file,
    node_env,
)
from virtuai.vcruntime.vnode import VnodeRef

__all__ = [
    "DesiredState",
    "ExecResult",
    "Image",
    "ImageStore",
    "KernelObject",
    "Kind",
    "NodeSpec",
    "NodeState",
    "NodeStatus",
    "ReconcileReport",
    "RuntimeConfig",
    "VcRuntime",
    "VcSpec",
    "VcStatus",
    "VnodeRef",
    "allocate_subnet",
    "gateway_address",
    "hostfile",
    "hosts_file",
    "node_address",
    "node_env",
]
