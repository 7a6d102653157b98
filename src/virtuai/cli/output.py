"""Printing: JSON, plain tables, key/value blocks, and the quantities inside them.

Tables are plain columns with a header (like ``squeue`` or ``kubectl get``),
never wrapped when written to a pipe so that ``grep`` and ``awk`` see one row
per line.  Text from the server is never read as Rich markup.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from virtuai.domain.units import format_duration, format_memory

NONE = "-"
PIPE_WIDTH = 4096  # as wide as a row needs: a pipe has no width to fit

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = Table(
        box=None,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        padding=(0, 2, 0, 0),
    )
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console = Console(file=sys.stdout, highlight=False)
    if console.is_terminal:
        console.print(table)
        return
    # A pipe: as wide as the rows need, and no padding after the last column.
    console = Console(file=sys.stdout, highlight=False, width=PIPE_WIDTH)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        typer.echo(line.rstrip())


def print_fields(pairs: Sequence[tuple[str, str]], indent: int = 0) -> None:
    """``Key: value`` lines with the values aligned."""
    if not pairs:
        return
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        typer.echo(f"{' ' * indent}{key + ':':<{width}} {value}".rstrip())


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# Quantities ------------------------------------------------------------------


def cpu(value: float | None) -> str:
    return NONE if value is None else f"{value:g}"


def memory(n_bytes: int | None) -> str:
    return NONE if n_bytes is None else format_memory(n_bytes)


def memory_approx(n_bytes: int | None) -> str:
    """Rounded for reading: ``23.5Gi`` rather than ``24684096Ki``."""
    if n_bytes is None:
        return NONE
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f}".removesuffix(".0") + unit
    return str(n_bytes)


def count(value: int | None) -> str:
    return NONE if value is None else str(value)


def duration(seconds: float | None) -> str:
    return NONE if seconds is None else format_duration(seconds)


def hours(seconds: float) -> str:
    """Two decimals, or four when that is all a short job amounts to (never a bare 0.00)."""
    value = seconds / 3600
    if 0 < value < 0.0001:
        return "<0.0001"
    if 0 < value < 0.005:
        return f"{value:.4f}"
    return f"{value:.2f}"


def parse_time(value: Any) -> dt.datetime | None:
    """An API timestamp; one without a zone is UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def timestamp(value: Any) -> str:
    """An API timestamp in local time, to the second."""
    moment = parse_time(value)
    if moment is None:
        return NONE
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def elapsed(started: Any, finished: Any, now: dt.datetime | None = None) -> str:
    """Time from ``started`` to ``finished`` (or to now while still running)."""
    start = parse_time(started)
    if start is None:
        return NONE
    end = parse_time(finished) or now or dt.datetime.now(dt.UTC)
    return format_duration(max(0.0, (end - start).total_seconds()))
