"""Resource vectors and the machines that offer them.

All quantities are integers (CPU in millicores, memory in bytes, GPUs as a
count) so that sums, differences and comparisons are exact: the scheduler's
invariants ("never over capacity") must not depend on float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtuai.domain.units import format_cpu, format_memory

RESOURCE_NAMES = ("cpu", "memory", "gpu")


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_milli: int = 0
    memory: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli + other.cpu_milli, self.memory + other.memory, self.gpu + other.gpu
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli - other.cpu_milli, self.memory - other.memory, self.gpu - other.gpu
        )

    def times(self, n: int) -> Resources:
        if n == 1:
            return self  # (immutable: most jobs have one task, and their total is asked often)
        return Resources(self.cpu_milli * n, self.memory * n, self.gpu * n)

    def fits_in(self, other: Resources) -> bool:
        return (
            self.cpu_milli <= other.cpu_milli
            and self.memory <= other.memory
            and self.gpu <= other.gpu
        )

    def is_nonnegative(self) -> bool:
        return self.cpu_milli >= 0 and self.memory >= 0 and self.gpu >= 0

    def amount(self, name: str) -> int:
        """The amount of one resource by its public name (``cpu``, ``memory``, ``gpu``)."""
        if name == "cpu":
            return self.cpu_milli
        if name == "memory":
            return self.memory
        if name == "gpu":
            return self.gpu
        raise KeyError(name)

    def exceeded(self, limit: Resources) -> list[str]:
        """Names of the resources where ``self`` is over ``limit``."""
        return [name for name in RESOURCE_NAMES if self.amount(name) > limit.amount(name)]

    def describe(self) -> str:
        parts = [f"cpu={format_cpu(self.cpu_milli)}", f"memory={format_memory(self.memory)}"]
        if self.gpu:
            parts.append(f"gpu={self.gpu}")
        return " ".join(parts)


ZERO = Resources()


def format_amount(name: str, amount: int) -> str:
    """One resource amount in the units users type."""
    if name == "cpu":
        return format_cpu(amount)
    if name == "memory":
        return format_memory(amount)
    return str(amount)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One physical (or declared) GPU of a node.

    ``index`` is what the job sees in ``CUDA_VISIBLE_DEVICES``.
    """

    index: int
    model: str
    memory: int
    uuid: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    """A machine work can be placed on. ``capacity.gpu`` equals ``len(gpus)``."""

    name: str
    pool: str
    site: str
    capacity: Resources
    gpus: tuple[GpuDevice, ...] = field(default=())
