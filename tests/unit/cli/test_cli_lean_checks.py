"""The lean path's quick checks (``cli/leancheck.py``) and config reader accept only what
the domain's parsers and PyYAML accept the same way; the common values pass them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from virtuai.cli import leanapi, leancheck
from virtuai.domain import arrays
from virtuai.domain.arrays import parse_array
from virtuai.domain.dependencies import parse_dependencies
from virtuai.domain.tenancy import validate_name
from virtuai.domain.units import parse_cpu, parse_duration, parse_memory
from virtuai.errors import InvalidRequest

# Texts built from the characters these values are made of, so that hypothesis finds the
# edges (a zero, a missing part, a unit too many) rather than random unicode.
CHARS = "0123456789.:-,%_+ mMkKGTiBshdafterokanyncorsinglet?\n٣"
texts = st.text(alphabet=CHARS, max_size=14)


def accepts(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except InvalidRequest:
        return False
    return True


CHECKS: list[tuple[Callable[[str], bool], Callable[[str], object]]] = [
    (leancheck.cpu, parse_cpu),
    (leancheck.memory, parse_memory),
    (leancheck.duration, parse_duration),
    (leancheck.dependency, parse_dependencies),
    (leancheck.array, parse_array),
    (leancheck.name, validate_name),
]


@settings(max_examples=400)
@given(texts)
@example("9999-9999:9999:9999")
@example("999999Ti")
@example("999999999.999999")
@example("999999999999m")
@example("0-1000000:7")
@example("0-9999,10000")
def test_what_a_quick_check_accepts_the_domain_accepts(text: str) -> None:
    for quick, parse in CHECKS:
        if quick(text):
            assert accepts(parse, text), (quick.__name__, text)


@settings(max_examples=300)
@given(st.text(alphabet="abz09-A_.", max_size=66))
def test_the_name_check_is_the_domains(text: str) -> None:
    assert leancheck.name(text) == accepts(validate_name, text)


@pytest.mark.parametrize(
    ("quick", "text"),
    [
        (leancheck.cpu, "1"),
        (leancheck.cpu, "0.1"),
        (leancheck.cpu, "500m"),
        (leancheck.memory, "16Mi"),
        (leancheck.memory, "1Gi"),
        (leancheck.memory, "512M"),
        (leancheck.duration, "1h"),
        (leancheck.duration, "30"),
        (leancheck.duration, "1:30:00"),
        (leancheck.duration, "2-12:00"),
        (leancheck.dependency, "afterok:12"),
        (leancheck.dependency, "afterok:1:2,afterany:3"),
        (leancheck.array, "0-99"),
        (leancheck.array, "0-99%4"),
        (leancheck.array, "1,3,5-7"),
        (leancheck.array, "0-15:4"),
        (leancheck.name, "train-1"),
    ],
)
def test_the_common_values_need_no_domain_parser(quick: Callable[[str], bool], text: str) -> None:
    assert quick(text)


@pytest.mark.parametrize(
    ("quick", "text"),
    [
        (leancheck.duration, "0"),
        (leancheck.duration, "0:00"),
        (leancheck.array, "9-0"),
        (leancheck.array, "0-10000"),
        (leancheck.dependency, "afterok:1?afterok:2"),
        (leancheck.cpu, "٣"),
        (leancheck.memory, "1Xi"),
    ],
)
def test_what_the_domain_refuses_fails_the_quick_check(
    quick: Callable[[str], bool], text: str
) -> None:
    assert not quick(text)


def test_the_array_limits_are_the_domains() -> None:
    assert (leancheck.MAX_ARRAY_SIZE, leancheck.MAX_ARRAY_INDEX) == (
        arrays.MAX_ARRAY_SIZE,
        arrays.MAX_ARRAY_INDEX,
    )


lines = st.lists(
    st.tuples(
        st.sampled_from(["url", "token", "Url", " url", "x"]),
        st.sampled_from([":", ": ", ":\t", " : ", ""]),
        st.text(alphabet="ahtp:/.,1#&'\"[] -_yesnoulTRUE~\t", max_size=24),
    ),
    max_size=3,
)


@settings(max_examples=400)
@given(lines)
@example([("url", ": ", "http://a:1,http://b:2"), ("token", ": ", "vai_x-y")])
@example([("token", ": ", "yes")])
@example([("token", ": ", "a: b")])
def test_the_config_lines_read_are_what_yaml_reads(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[str, str, str]]
) -> None:
    path = tmp_path_factory.mktemp("config") / "cli.yaml"
    text = "# Written by `virtuai up`\n" + "".join(f"{k}{sep}{v}\n" for k, sep, v in lines)
    path.write_text(text, encoding="utf-8")
    try:
        found = leanapi.read_simple_config(str(path))
    except leanapi.Fallback:
        return
    assert found == (yaml.safe_load(text) or {})


def test_the_config_file_virtuai_up_writes_is_read_plainly(tmp_path: Path) -> None:
    from virtuai.clientconfig import write_cli_config

    path = write_cli_config("http://127.0.0.1:8642", "vai_AbC-12_x", tmp_path / "cli.yaml")
    assert leanapi.read_simple_config(str(path)) == {
        "url": "http://127.0.0.1:8642",
        "token": "vai_AbC-12_x",
    }
