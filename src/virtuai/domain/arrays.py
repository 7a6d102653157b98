"""Job arrays, as Slurm writes them: ``0-99``, ``1,3,5-7``, ``0-15:4``, with ``%N`` throttling."""

from __future__ import annotations

import re
from dataclasses import dataclass

from virtuai.domain.units import is_ascii_number
from virtuai.errors import InvalidRequest

MAX_ARRAY_SIZE = 10_000
MAX_ARRAY_INDEX = 1_000_000
# Only ASCII digits, at most 7 of them (MAX_ARRAY_INDEX): int() of a huge string is slow.
_RANGE_RE = re.compile(r"^(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?$", re.ASCII)


@dataclass(frozen=True, slots=True)
class ArraySpec:
    indices: tuple[int, ...]
    max_running: int | None = None  # at most this many elements hold resources at once


def parse_array(text: str, *, field: str = "array", max_size: int = MAX_ARRAY_SIZE) -> ArraySpec:
    """Slurm's array syntax; at most ``max_size`` elements (a setting, never above
    ``MAX_ARRAY_SIZE``)."""
    max_size = min(max_size, MAX_ARRAY_SIZE)
    raw = text.replace(" ", "")
    spec, _, throttle = raw.partition("%")
    max_running: int | None = None
    if throttle:
        if not is_ascii_number(throttle) or len(throttle) > 7 or int(throttle) < 1:
            raise InvalidRequest(f"{field}: %{throttle} must be a whole number >= 1", field=field)
        max_running = int(throttle)
    indices: set[int] = set()
    for part in spec.split(","):
        match = _RANGE_RE.match(part)
        if not match:
            raise InvalidRequest(
                f"{field}: cannot read {part!r}; use 0-99, 1,3,5-7 or 0-15:4, "
                "optionally followed by %N",
                field=field,
            )
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else 1
        if end < start or step < 1:
            raise InvalidRequest(f"{field}: {part!r} is an empty range", field=field)
        if end > MAX_ARRAY_INDEX:
            raise InvalidRequest(f"{field}: indices go up to {MAX_ARRAY_INDEX}", field=field)
        if (end - start) // step + 1 + len(indices) > max_size:
            raise InvalidRequest(f"{field}: an array has at most {max_size} elements", field=field)
        indices.update(range(start, end + 1, step))
    return ArraySpec(tuple(sorted(indices)), max_running)
