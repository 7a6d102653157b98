"""Running a job's task inside a virtual node through the local driver.

The control plane asks the runtime for ``VcRuntime.vnode(vc, i)`` at launch
time, sets ``TaskSpec.vnode`` to its ``node`` (a ``host.sandbox.VirtualNode``)
and adds its ``env`` (``VIRTUAI_HOSTFILE``, ...) to the task's environment.
The local driver copies the node into the task's ``spec.json`` and its
supervisor enters it; the driver does not import this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from virtuai.host.sandbox import VirtualNode


@dataclass(frozen=True, slots=True)
class VnodeRef:
    node: VirtualNode
    env: Mapping[str, str] = field(default_factory=dict)  # VIRTUAI_HOSTFILE, ... for the task
