"""Formatting helpers."""

from __future__ import annotations

import datetime as dt

import pytest

from virtuai.cli import output


def test_quantities() -> None:
    assert output.cpu(0.5) == "0.5"
    assert output.cpu(2.0) == "2"
    assert output.memory(3 * 2**30) == "3Gi"
    assert output.memory(None) == "-"
    assert output.duration(90061) == "1-01:01:01"
    assert output.hours(5400) == "1.50"
    assert output.hours(1.8) == "0.0005"
    assert output.hours(0) == "0.00"
    assert output.memory_approx(24684096 * 1024) == "23.5Gi"
    assert output.memory_approx(64 * 2**30) == "64Gi"


def test_tables_have_no_trailing_blanks(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_table(["A", "LONGER"], [["1", ""], ["22", "x"]])
    assert capsys.readouterr().out == "A   LONGER\n1\n22  x\n"


def test_elapsed() -> None:
    start = "2026-05-01T10:00:00+00:00"
    assert output.elapsed(start, "2026-05-01T12:30:00+00:00") == "02:30:00"
    now = dt.datetime(2026, 5, 1, 10, 0, 42, tzinfo=dt.UTC)
    assert output.elapsed("2026-05-01T10:00:00", None, now) == "00:00:42"  # naive = UTC
    assert output.elapsed(None, None) == "-"


def test_truncate() -> None:
    assert output.truncate("short", 10) == "short"
    assert output.truncate("a\nmulti  line", 20) == "a multi line"
    assert output.truncate("x" * 50, 10) == "xxxxxxx..."


def test_tables_do_not_wrap_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    long = "word " * 60
    output.print_table(["A", "B"], [["1", long.strip()]])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[0] == "1"
    assert lines[1].endswith("word")


def test_server_text_is_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_table(["NAME"], [["[bold]x[/bold]"]])
    assert "[bold]x[/bold]" in capsys.readouterr().out
