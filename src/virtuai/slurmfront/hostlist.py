"""Slurm hostlists: ``lab-[0-3,7]`` <-> ``lab-0 lab-1 lab-2 lab-3 lab-7``.

Only ASCII digits are numbers; zero padding (``n[01-10]``) is kept, as Slurm does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from virtuai.errors import InvalidRequest

MAX_HOSTS = 65_536
_SUFFIX_RE = re.compile(r"^(.*?)([0-9]+)$")
_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")


def expand(text: str) -> list[str]:
    """``lab-[0-2],gpu1`` -> ``["lab-0", "lab-1", "lab-2", "gpu1"]`` (order kept)."""
    hosts: list[str] = []
    for item in _split_top(text.strip()):
        if item:
            hosts.extend(_expand_one(item))
            if len(hosts) > MAX_HOSTS:
                raise InvalidRequest(f"hostlist: more than {MAX_HOSTS} hosts", field="hostlist")
    return hosts


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise InvalidRequest(f"hostlist: unbalanced ']' in {text!r}", field="hostlist")
        if (char == "," or char.isspace()) and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise InvalidRequest(f"hostlist: unbalanced '[' in {text!r}", field="hostlist")
    parts.append("".join(current))
    return parts


def _expand_one(item: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    prefix, body, rest = item[:start], item[start + 1 : end], item[end + 1 :]
    tails = _expand_one(rest) if rest else [""]
    out: list[str] = []
    for part in body.split(","):
        match = _RANGE_RE.match(part)
        if not match:
            raise InvalidRequest(f"hostlist: cannot read range {part!r}", field="hostlist")
        low_text, high_text = match.group(1), match.group(2) or match.group(1)
        low, high = int(low_text), int(high_text)
        if high < low:
            raise InvalidRequest(f"hostlist: range {part!r} is empty", field="hostlist")
        if high - low >= MAX_HOSTS:
            raise InvalidRequest(f"hostlist: more than {MAX_HOSTS} hosts", field="hostlist")
        width = len(low_text) if low_text.startswith("0") and len(low_text) > 1 else 0
        for number in range(low, high + 1):
            out.extend(f"{prefix}{number:0{width}d}{tail}" for tail in tails)
    return out


def compress(hosts: Sequence[str] | Iterable[str]) -> str:
    """``["lab-0", "lab-1", "lab-3"]`` -> ``"lab-[0-1,3]"``, as ``scontrol show hostlist``.

    Hosts sharing a prefix (and digit width when zero-padded) fold into one
    bracket; first-seen order of the groups is kept, numbers sorted within.
    """
    groups: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int] | str] = []
    for host in hosts:
        match = _SUFFIX_RE.match(host)
        if not match:
            order.append(host)
            continue
        prefix, digits = match.group(1), match.group(2)
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        key = (prefix, width)
        if key not in groups:
            groups[key] = []
            order.append(key)
        if int(digits) not in groups[key]:
            groups[key].append(int(digits))
    out: list[str] = []
    for entry in order:
        if isinstance(entry, str):
            out.append(entry)
            continue
        prefix, width = entry
        numbers = sorted(groups[entry])
        if len(numbers) == 1:
            out.append(f"{prefix}{numbers[0]:0{width}d}")
            continue
        ranges = []
        low = prev = numbers[0]
        for number in [*numbers[1:], None]:
            if number is not None and number == prev + 1:
                prev = number
                continue
            ranges.append(
                f"{low:0{width}d}" if low == prev else f"{low:0{width}d}-{prev:0{width}d}"
            )
            if number is not None:
                low = prev = number
        out.append(f"{prefix}[{','.join(ranges)}]")
    return ",".join(out)
