"""The lean path's JSON (``cli/leanjson.py``) reads and writes exactly what ``json`` does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtuai.cli import leanjson

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(values, st.sampled_from([None, 2]))
def test_dumps_writes_what_json_writes(value: Any, indent: int | None) -> None:
    assert leanjson.dumps(value, indent) == json.dumps(value, ensure_ascii=False, indent=indent)


@settings(max_examples=300)
@given(values, st.sampled_from([None, 2]), st.sampled_from(["", " ", "\n\t\r "]))
def test_loads_reads_what_json_reads(value: Any, indent: int | None, space: str) -> None:
    raw = (space + json.dumps(value, indent=indent, ensure_ascii=False) + space).encode()
    # Compared as JSON text again: NaN is not equal to itself.
    assert json.dumps(leanjson.loads(raw)) == json.dumps(json.loads(raw))


@pytest.mark.parametrize(
    "raw",
    [b"", b"  ", b"{", b'{"a": 1} x', b"1 2", b"\xff\xfe{", b'"\xff"', b"[1,]", b"nul", b"'a'"],
)
def test_what_json_refuses_the_lean_reader_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        leanjson.loads(raw)


def test_a_bom_or_another_encoding_is_read_as_json_reads_it() -> None:
    for raw in (b'\xef\xbb\xbf{"id": 1}', '{"id": 1}'.encode("utf-16")):
        assert leanjson.loads(raw) == json.loads(raw) == {"id": 1}


def test_what_json_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError):
        json.dumps({"a": object()})
    with pytest.raises(TypeError):
        leanjson.dumps({"a": object()})
