"""Slurm hostlists: ``lab-[0-3,7]`` <-> ``lab-0 lab-1 lab-2 lab-3 lab-7``.

The same rules as ``virtuai.slurmfront.hostlist``, which the shipped runner cannot import.
Standard library only: shipped with the job's runner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
_SUFFIX_RE = re.compile(r"^(.*?)([0-9]+)$")


def expand_hostlist(text: str) -> list[str]:
    hosts: list[str] = []
    depth, current = 0, ""
    for char in text.strip() + ",":
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            if current:
                hosts.extend(_expand_one(current))
            current = ""
        else:
            current += char
    return hosts


def _expand_one(item: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    tails = _expand_one(item[end + 1 :]) if item[end + 1 :] else [""]
    out: list[str] = []
    for part in item[start + 1 : end].split(","):
        match = _RANGE_RE.match(part)
        if not match:
            raise ValueError(f"cannot read hostlist range {part!r}")
        low_text = match.group(1)
        width = len(low_text) if low_text.startswith("0") and len(low_text) > 1 else 0
        for number in range(int(low_text), int(match.group(2) or low_text) + 1):
            out.extend(f"{item[:start]}{number:0{width}d}{tail}" for tail in tails)
    return out


def compress_hostlist(hosts: Sequence[str]) -> str:
    if len(set(hosts)) != len(hosts):
        # Several of the allocation's nodes on one machine: listed as they are, so that
        # `scontrol show hostnames` still prints one line per node.
        return ",".join(hosts)
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for host in hosts:
        match = _SUFFIX_RE.match(host)
        if not match or (match.group(2).startswith("0") and len(match.group(2)) > 1):
            order.append("\0" + host)
            continue
        prefix = match.group(1)
        if prefix not in groups:
            groups[prefix] = []
            order.append(prefix)
        groups[prefix].append(int(match.group(2)))
    out = []
    for key in order:
        if key.startswith("\0"):
            out.append(key[1:])
            continue
        numbers = sorted(set(groups[key]))
        if len(numbers) == 1:
            out.append(f"{key}{numbers[0]}")
            continue
        ranges, low, prev = [], numbers[0], numbers[0]
        for number in [*numbers[1:], -1]:
            if number == prev + 1:
                prev = number
                continue
            ranges.append(str(low) if low == prev else f"{low}-{prev}")
            low = prev = number
        out.append(f"{key}[{','.join(ranges)}]")
    return ",".join(out)
