"""Quick acceptance of the values the lean entry point sees most, without ``re``.

The domain's parsers (``domain.units``, ``.arrays``, ``.dependencies``,
``.tenancy``) import ``re``, ``decimal``, ``enum`` and ``dataclasses``: 10-20 ms
of CPU, more than the rest of a ``virtuai submit``.  Each check here accepts
only values that the domain's parser accepts too (a subset: ``1``, ``0.5``,
``500m``, ``16Mi``, ``1h``, ``1:30:00``, ``afterok:12``, ``0-99%4``); when it
says no, the caller asks the domain's parser, which has the last word.
``tests/unit/cli/test_cli_lean_checks.py`` checks the subset with hypothesis.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_MEMORY_UNITS = frozenset({"", "k", "K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"})
_DURATION_SUFFIX = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DEPENDENCY_KINDS = frozenset({"after", "afterok", "afterany", "afternotok", "aftercorr"})
MAX_ARRAY_SIZE = 10_000  # domain.arrays' limits (a test checks they agree)
MAX_ARRAY_INDEX = 1_000_000


def digits(text: str, most: int) -> bool:
    """1 to ``most`` ASCII digits (``str.isdigit`` also takes other scripts' digits)."""
    return 0 < len(text) <= most and all(c in _DIGITS for c in text)


def cpu(text: str) -> bool:
    """``2``, ``0.5``, ``500m``: far below ``domain.units``' bounds."""
    if text.endswith("m"):
        return digits(text[:-1], 12)
    whole, dot, fraction = text.partition(".")
    return digits(whole, 9) and (not dot or digits(fraction, 6))


def memory(text: str) -> bool:
    """``16Mi``, ``4Gi``, ``512M``, bytes: at most 6 digits, so under the 1 EiB bound."""
    count = len(text) - len(text.lstrip("0123456789"))
    return digits(text[:count], 6) and text[count:] in _MEMORY_UNITS


def duration(text: str) -> bool:
    """``90s``, ``2h``, ``30``, ``1:30:00``, ``2-12:00``: positive, under 68 years."""
    if text[-1:] in _DURATION_SUFFIX:
        return digits(text[:-1], 4) and int(text[:-1]) > 0
    days, dash, clock = text.rpartition("-")
    if dash and not digits(days, 4):
        return False
    parts = clock.split(":")
    if len(parts) > 3 or not all(digits(part, 4) for part in parts):
        return False
    return (dash and int(days) > 0) or any(int(part) for part in parts)


def name(text: str) -> bool:
    """A DNS label, exactly as ``domain.tenancy.validate_name`` has it."""
    return (
        0 < len(text) <= 63
        and all(c in _NAME_CHARS for c in text)
        and text[0] != "-"
        and text[-1] != "-"
    )


def dependency(text: str) -> bool:
    """``afterok:12``, ``afterany:3:4,afternotok:5``, ``singleton``: all-of lists, no
    ``+MIN``, ``ID_IDX`` or ``?``."""
    count = 0
    for part in text.split(","):
        if part == "singleton":
            count += 1
            continue
        kind, *ids = part.split(":")
        if kind not in _DEPENDENCY_KINDS or not ids:
            return False
        if not all(digits(job_id, 9) for job_id in ids):
            return False
        count += len(ids)
    return count <= 1000


def array(text: str) -> bool:
    """``0-99``, ``1,3,5-7``, ``0-15:4``, ``%N``: as ``domain.arrays.parse_array``
    counts them, without spaces."""
    spec, percent, throttle = text.partition("%")
    if percent and not (digits(throttle, 7) and int(throttle) >= 1):
        return False
    indices: set[int] = set()
    for part in spec.split(","):
        first, dash, rest = part.partition("-")
        last, colon, step_text = rest.partition(":")
        if not digits(first, 7) or (dash and not digits(last, 7)):
            return False
        if colon and not (dash and digits(step_text, 7)):
            return False
        start = int(first)
        end = int(last) if dash else start
        step = int(step_text) if colon else 1
        if end < start or step < 1 or end > MAX_ARRAY_INDEX:
            return False
        if (end - start) // step + 1 + len(indices) > MAX_ARRAY_SIZE:
            return False
        indices.update(range(start, end + 1, step))
    return True
