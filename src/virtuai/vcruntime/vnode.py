"""Running a job's task inside a virtual node through the local driver.

The control plane asks the runtime for ``VcRuntime.vnode(vc, i)`` at launch
time and passes ``VnodeRef.label()`` in ``TaskSpec.labels`` (the task's
environment should include ``VnodeRef.env``)::

    labels = {"virtuai.vnode": '{"vc": ..., "index": 0, "hostname": "c-0",
              "init_pid": 4242, "init_create_time": 1700000000.12,
              "cgroup": {"version": 1, "roots": {...}, "parent": "virtuai-vcs/vai-1a2b3c4d-0"}}'}

The local driver copies it into the task's ``spec.json``; its supervisor
then creates the task's cgroup *inside the node's* (``cgroup``), checks that
``init_pid`` is still the process born at ``init_create_time``, enters the
node's pid namespace before forking the task, and the task enters the net,
uts, ipc and mount namespaces and the working directory inside the node
before dropping to the tenant's user.  The driver does not import this
package: the label is the whole contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VNODE_LABEL = "virtuai.vnode"


@dataclass(frozen=True, slots=True)
class VnodeRef:
    vc: str
    index: int
    hostname: str
    init_pid: int
    init_create_time: float
    cgroup: Mapping[str, Any]  # CgroupLayout JSON whose tasks are children of the node's cgroup
    env: Mapping[str, str] = field(default_factory=dict)  # VIRTUAI_HOSTFILE, ... for the task

    def to_json(self) -> dict[str, Any]:
        return {
            "vc": self.vc,
            "index": self.index,
            "hostname": self.hostname,
            "init_pid": self.init_pid,
            "init_create_time": self.init_create_time,
            "cgroup": dict(self.cgroup),
        }

    def label(self) -> dict[str, str]:
        return {VNODE_LABEL: json.dumps(self.to_json(), sort_keys=True)}
