"""The one error for a trace or cluster file that cannot be read as text.

Traces come from other people's tools: a spreadsheet's export in Latin-1 or a
binary file given by mistake must be named, with the line of the first bad byte,
not end in a ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

from pathlib import Path

from virtuai.errors import InvalidRequest

__all__ = ["unreadable"]


def unreadable(path: Path, source: str, exc: OSError | UnicodeDecodeError) -> InvalidRequest:
    """What to tell the user about ``exc``, raised while reading ``path`` (named ``source``)."""
    if isinstance(exc, OSError):
        return InvalidRequest(f"{source}: cannot read it: {exc.strerror or exc}")
    try:  # the decoder saw one chunk; find the first bad byte in the whole file
        data = path.read_bytes()
        data.decode("utf-8-sig")
    except UnicodeDecodeError as whole:
        line = data.count(b"\n", 0, whole.start) + 1
        column = whole.start - (data.rfind(b"\n", 0, whole.start) + 1) + 1
        return InvalidRequest(
            f"{source} line {line}: not UTF-8 text (byte 0x{data[whole.start]:02x} at "
            f"column {column}); save the file as UTF-8"
        )
    except OSError:
        pass
    return InvalidRequest(f"{source}: not UTF-8 text ({exc.reason}); save the file as UTF-8")
