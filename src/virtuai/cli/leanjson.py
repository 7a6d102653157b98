"""JSON for the lean entry point, on the C accelerator ``_json`` alone.

``import json`` imports ``re``, ``enum``, ``functools`` and ``collections``:
about 5 ms of CPU in a command whose whole budget is a few tens of ms.  The
parser here is ``json``'s own C scanner, driven as ``json.loads`` drives it;
``dumps`` writes exactly what ``json.dumps(value, ensure_ascii=False,
indent=indent)`` writes for the values JSON decodes to (``test_cli_lean_json``
compares them).  Anything unusual is handed to the ``json`` package.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """What ``_json.make_scanner`` reads from ``json.JSONDecoder`` (its defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None  # read from Python 3.15 on
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _make_scanner() -> Any:
    try:
        return _json.make_scanner(_Context())  # type: ignore[arg-type]
    except AttributeError:  # a later Python's scanner reads more: json.loads then
        return None


_scanner = _make_scanner()


def loads(raw: bytes) -> Any:
    """``json.loads(raw)``; a ``ValueError`` for anything that is not one JSON document."""
    if _scanner is None or raw[:3] == b"\xef\xbb\xbf" or b"\x00" in raw[:4]:
        import json  # a BOM or UTF-16/32: json.loads detects the encoding

        return json.loads(raw)
    text = raw.decode("utf-8", "surrogatepass")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scanner(text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("Extra data")
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """``json.dumps(value, ensure_ascii=False, indent=indent)``."""
    out: list[str] = []
    _encode(value, out, None if indent is None else " " * indent, 0)
    return "".join(out)


def _encode(value: Any, out: list[str], indent: str | None, level: int) -> None:
    if isinstance(value, str):
        out.append(_json.encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, list | tuple | dict):
        _container(value, out, indent, level)
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _container(
    value: list[Any] | tuple[Any, ...] | dict[Any, Any],
    out: list[str],
    indent: str | None,
    level: int,
) -> None:
    is_dict = isinstance(value, dict)
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    if not value:
        out.append(opening + closing)
        return
    if indent is None:
        separator, inner, outer = ", ", "", ""
    else:
        inner = "\n" + indent * (level + 1)
        separator, outer = "," + inner, "\n" + indent * level
    out.append(opening + inner)
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for position, (key, item) in enumerate(items):
        if position:
            out.append(separator)
        if is_dict:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(_json.encode_basestring(key) + ": ")
        _encode(item, out, indent, level + 1)
    out.append(outer + closing)


def _float(value: float) -> str:
    text = float.__repr__(value)
    return _NON_FINITE.get(text, text)
