"""Machines of a cluster: their classes, administrative states, and how jobs target them.

Pure: the store keeps these as strings, the API and CLI validate with them, and
the scheduler only ever sees the set of node names a job may use.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from virtuai.errors import InvalidRequest


class NodeClass(enum.StrEnum):
    """HPC4AI's three kinds of machine; per-class policy (e.g. a walltime cap) keys on it."""

    LIGHT = "light"
    FAT = "fat"
    GPU = "gpu"


class NodeState(enum.StrEnum):
    """What users see. The first three are an administrator's wish; ``unreachable`` is the
    leader's finding (heartbeats lapsed) and wins over them until the node is back."""

    READY = "ready"
    CORDONED = "cordoned"  # no new placements; running work goes on
    DRAINING = "draining"  # no new placements; running work ends or is requeued
    UNREACHABLE = "unreachable"


ADMIN_STATES = (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING)

_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
MAX_CONSTRAINTS = 16


@dataclass(frozen=True, slots=True)
class Constraint:
    """``key=value`` (the label has that value) or a bare ``key`` (the label is present:
    Slurm's ``--constraint`` feature names)."""

    key: str
    value: str | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.key not in labels:
            return False
        return self.value is None or labels[self.key] == self.value

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


def parse_constraint(text: str, *, field: str = "constraints") -> Constraint:
    key, sep, value = text.strip().partition("=")
    if not _LABEL_KEY.match(key):
        raise InvalidRequest(
            f"{field}: {text!r} is not a label name or key=value "
            "(letters, digits, '.', '_', '-', '/'; at most 63)",
            field=field,
        )
    if sep and not _LABEL_VALUE.match(value):
        raise InvalidRequest(
            f"{field}: the value in {text!r} may hold letters, digits, '.', '_', '-' (at most 63)",
            field=field,
        )
    return Constraint(key, value if sep else None)


def parse_labels(items: Iterable[str], *, field: str = "labels") -> dict[str, str]:
    """``k=v`` items (a bare ``k`` means ``k=""``) as a mapping."""
    labels: dict[str, str] = {}
    for item in items:
        constraint = parse_constraint(item, field=field)
        labels[constraint.key] = constraint.value or ""
    return labels


def node_matches(
    node_class: str,
    labels: Mapping[str, str],
    want_class: str | None,
    constraints: Iterable[Constraint],
) -> bool:
    """May a job asking for ``want_class`` and ``constraints`` run on this node?"""
    if want_class is not None and node_class != want_class:
        return False
    return all(c.matches(labels) for c in constraints)


def describe_target(want_class: str | None, constraints: Iterable[Constraint]) -> str:
    """``class gpu with ib, rack=r1`` for reasons users read."""
    parts = [] if want_class is None else [f"class {want_class}"]
    names = ", ".join(str(c) for c in constraints)
    if names:
        parts.append(f"label {names}" if not parts else f"with {names}")
    return " ".join(parts) or "any node"
