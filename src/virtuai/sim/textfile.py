"""Reading trace and cluster files that other people's tools wrote: errors located.

A spreadsheet's export in Latin-1 or a binary file given by mistake must be named,
with the line of the first bad byte, not end in a ``UnicodeDecodeError`` traceback;
a CSV syntax error (an unterminated quote, above all) must name the line where its
row began, not the end of the file, and quote none of the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from virtuai.errors import InvalidRequest

__all__ = ["MAX_SECONDS", "CsvRows", "unreadable"]

# The longest time any input of the simulator may give (a trace's times, a policy's
# durations): about 317 years, far beyond any real one, so that a typo such as 1e300 is
# an error naming its field instead of an overflow in the metrics' sums of squares.
MAX_SECONDS = 10**10


class CsvRows:
    """``csv.reader``'s rows (strict), its syntax errors as ``InvalidRequest``."""

    def __init__(self, handle: Iterable[str], source: str) -> None:
        self._reader = csv.reader(handle, strict=True)
        self._source = source

    @property
    def line_num(self) -> int:
        """The line where the last row read ends (as ``csv.reader``'s)."""
        return self._reader.line_num

    def __iter__(self) -> CsvRows:
        return self

    def __next__(self) -> list[str]:
        start = self._reader.line_num + 1
        try:
            return next(self._reader)
        except csv.Error as exc:
            what = str(exc)
            if "unexpected end of data" in what or "EOF" in what:
                what = 'a quote (") opens a cell and never closes'
            raise InvalidRequest(f"{self._source} line {start}: {what}", field=None) from None


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
