"""What this machine offers to the scheduler: CPUs, memory and GPUs.

The capacity must be what tasks can really get, or the scheduler would place
work that cannot run: detected values are cut down to the server's CPU
affinity and to the cgroup limits it lives under (a container's limits), and
values set by the administrator are cut down the same way, with a warning.

GPUs come from, in this order: the ``gpus`` setting when it is given (the
documented device model for machines without NVML: declared devices are
placed and exported in ``CUDA_VISIBLE_DEVICES`` but nothing checks they
exist; ``[]`` hides real GPUs), else NVML when ``pynvml`` imports and
initialises, else none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.domain.sites import LOCAL_SITE
from virtuai.domain.units import format_cpu, format_memory
from virtuai.host.cgroups import own_limits

if TYPE_CHECKING:
    from virtuai.settings import LocalDriverSettings

try:  # optional: nvidia-ml-py (the ``gpu`` extra)
    import pynvml
except ImportError:  # pragma: no cover - depends on the machine
    pynvml = None

log = logging.getLogger(__name__)


def short_hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def detect_node(name: str, settings: LocalDriverSettings) -> Node:
    """The one node of the local driver, as the scheduler should see it."""
    gpus = detect_gpus(settings)
    capacity = Resources(
        cpu_milli=detect_cpu_milli(settings.cpu),
        memory=detect_memory(settings.memory),
        gpu=len(gpus),
    )
    return Node(name=name, pool=settings.pool, site=LOCAL_SITE, capacity=capacity, gpus=gpus)


def detect_cpu_milli(declared: float | None) -> int:
    """Millicores: the cores this server may use (affinity, cgroup quota), or ``declared``.

    An administrator may declare more CPUs than there are cores: tasks then
    time-share them, each still held to its own CPU quota.  Memory, by
    contrast, is never over-committed (see ``detect_memory``).
    """
    cores = psutil.cpu_count(logical=True) or 1
    with contextlib.suppress(AttributeError, OSError):  # not Linux
        cores = min(cores, len(os.sched_getaffinity(0)))
    cap = cores * 1000
    quota, _ = own_limits()
    if quota is not None:
        cap = min(cap, quota)
    if declared is None:
        return cap
    wanted = round(declared * 1000)
    if wanted > cap:
        log.warning(
            "local.cpu=%s is more than the %s CPUs this server can use: tasks will time-share",
            format_cpu(wanted),
            format_cpu(cap),
        )
    return wanted


def detect_memory(declared: int | None) -> int:
    """Bytes: all memory, or ``declared``; never more than the server's cgroup allows."""
    cap = int(psutil.virtual_memory().total)
    _, limit = own_limits()
    if limit is not None:
        cap = min(cap, limit)
    if declared is None:
        return cap
    if declared > cap:
        log.warning(
            "local.memory=%s is more than this server can use (%s); offering %s",
            format_memory(declared),
            format_memory(cap),
            format_memory(cap),
        )
        return cap
    return declared


def detect_gpus(settings: LocalDriverSettings) -> tuple[GpuDevice, ...]:
    if settings.gpus is not None:
        return tuple(
            GpuDevice(index=i, model=gpu.model, memory=gpu.memory, uuid=f"declared-{i}")
            for i, gpu in enumerate(settings.gpus)
        )
    return nvml_gpus()


def nvml_gpus() -> tuple[GpuDevice, ...]:
    """GPUs as NVML numbers them (PCI bus order; tasks get ``CUDA_DEVICE_ORDER=PCI_BUS_ID``)."""
    if pynvml is None:
        return ()
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.info("no NVIDIA GPUs: NVML did not initialise (%s)", exc)
        return ()
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(
                GpuDevice(
                    index=index,
                    model=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
        return tuple(devices)
    except Exception as exc:
        log.warning("NVML failed while listing GPUs (%s); offering none", exc)
        return ()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class GpuStats:
    """What NVML says a GPU is doing now (metrics)."""

    index: int
    uuid: str
    model: str
    utilization: float  # percent of time a kernel ran, over NVML's last sample period
    memory_used: int
    memory_total: int


def nvml_gpu_stats() -> list[GpuStats]:
    """Utilization and memory of every NVIDIA GPU; empty without NVML (declared GPUs have
    no hardware to ask)."""
    if pynvml is None:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        stats = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            stats.append(
                GpuStats(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    model=_text(pynvml.nvmlDeviceGetName(handle)),
                    utilization=float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    memory_used=int(memory.used),
                    memory_total=int(memory.total),
                )
            )
        return stats
    except Exception as exc:
        log.warning("NVML failed while reading GPU metrics (%s)", exc)
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)
