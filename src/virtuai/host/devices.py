"""GPU device nodes: what a sandbox (a virtual node, or a job over an image) must bind so
that the GPUs a task was given work inside it.

Plain tasks see the host's ``/dev``; a sandbox makes a minimal ``/dev`` of its own, so
the devices of the task's GPUs (NVIDIA's naming) and the driver's control devices are
bound into it.  Declared GPUs (the device model used where there is no GPU) have no
device node, so nothing is bound for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

NVIDIA_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


def gpu_devices(gpu_indices: Sequence[int], dev: Path = Path("/dev")) -> tuple[str, ...]:
    """Device nodes of the GPUs ``gpu_indices``, and the control devices, where they exist."""
    if not gpu_indices:
        return ()
    found = [str(dev / f"nvidia{i}") for i in gpu_indices if (dev / f"nvidia{i}").exists()]
    if found:
        found += [str(dev / d) for d in NVIDIA_CONTROL if (dev / d).exists()]
    return tuple(found)
