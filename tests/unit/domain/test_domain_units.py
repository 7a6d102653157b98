"""Parsing and printing of memory, CPUs and durations as users type them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtuai.domain.units import (
    format_cpu,
    format_duration,
    format_memory,
    parse_cpu,
    parse_duration,
    parse_memory,
)
from virtuai.errors import InvalidRequest

Ki, Mi, Gi, Ti = 2**10, 2**20, 2**30, 2**40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 * Mi),
        ("4Gi", 4 * Gi),
        ("4G", 4 * 10**9),
        ("1.5Gi", 3 * Gi // 2),
        ("2Ti", 2 * Ti),
        ("100", 100),
        ("8k", 8000),
        ("8Ki", 8 * Ki),
        ("4GiB", 4 * Gi),
        (" 4 Gi ", 4 * Gi),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "Gi", "4 gigs", "-1Gi", "1e3", "4Pi", "four"])
def test_parse_memory_rejects_garbage_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_memory(text, field="resources.memory")
    assert info.value.field == "resources.memory"
    assert "512Mi" in info.value.message  # tells the user what would work


def test_parse_memory_rejects_negative_ints() -> None:
    with pytest.raises(InvalidRequest, match="must not be negative"):
        parse_memory(-1)


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [
        (4 * Gi, "4Gi"),
        (512 * Mi, "512Mi"),
        (Ti, "1Ti"),
        (3 * Gi // 2, "1536Mi"),
        (1536, "1.5Ki"),
        (int(31.2 * Gi), "31.2Gi"),
        (1000, "1000"),
        (0, "0"),
    ],
)
def test_format_memory(n_bytes: int, text: str) -> None:
    assert format_memory(n_bytes) == text


@given(st.integers(0, 2**20), st.sampled_from([Ki, Mi, Gi, Ti]))
def test_whole_binary_units_round_trip(count: int, unit: int) -> None:
    n_bytes = count * unit
    assert parse_memory(format_memory(n_bytes)) == n_bytes


@given(st.integers(0, 1023))
def test_small_byte_counts_round_trip(n_bytes: int) -> None:
    assert parse_memory(format_memory(n_bytes)) == n_bytes


def test_format_memory_rounds_what_has_no_exact_binary_form() -> None:
    # For display only: 1025 bytes shows as 1.0Ki; callers must not parse it back.
    assert format_memory(1025) == "1.0Ki"


@pytest.mark.parametrize(
    ("text", "millicores"),
    [
        ("2", 2000),
        ("0.5", 500),
        ("250m", 250),
        (2, 2000),
        (1.5, 1500),
        (" 4 ", 4000),
        ("0", 0),
        ("1.2345", 1234),
    ],
)
def test_parse_cpu(text: str | float, millicores: int) -> None:
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize("text", ["", "m", "two", "-1", "-500m", "1,5"])
def test_parse_cpu_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_cpu(text, field="cpu")
    assert info.value.field == "cpu"


@pytest.mark.parametrize("text", ["inf", "nan", "Infinity"])
def test_parse_cpu_rejects_non_finite_numbers(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("millicores", "text"), [(2000, "2"), (500, "0.5"), (250, "0.25"), (0, "0")]
)
def test_format_cpu(millicores: int, text: str) -> None:
    assert format_cpu(millicores) == text


@given(st.integers(0, 999_999))
def test_cpu_round_trips_up_to_a_thousand_cpus(millicores: int) -> None:
    assert parse_cpu(format_cpu(millicores)) == millicores


def test_cpu_round_trips_beyond_a_thousand_cpus() -> None:
    assert parse_cpu(format_cpu(1_234_567)) == 1_234_567


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1.5h", 5400),
        ("1d", 86400),
        ("10", 600),  # Slurm: a bare number is minutes
        ("10:30", 630),  # minutes:seconds
        ("1:00:00", 3600),  # hours:minutes:seconds
        ("1-12", 129600),  # days-hours
        ("1-12:30", 131400),  # days-hours:minutes
        ("1-12:30:15", 131415),
        (" 2h ", 7200),
        (45, 45),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1w", "1:2:3:4", "-5", "2 hours"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidRequest, match="cannot read"):
        parse_duration(text, field="time")


@pytest.mark.parametrize("value", [0, -1, "0", "0s", "0.1s", "0:00"])
def test_parse_duration_must_be_positive(value: str | int) -> None:
    with pytest.raises(InvalidRequest, match="longer than zero"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "00:01:30"), (3600, "01:00:00"), (90061, "1-01:01:01"), (59.9, "00:00:59")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(1, 400 * 86400))
def test_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
