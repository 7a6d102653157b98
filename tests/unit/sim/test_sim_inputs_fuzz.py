"""Whatever a trace, cluster or policy file holds, reading it ends in jobs or in an
``InvalidRequest`` naming the file: never in another exception (which ``virtuai sim``
would print as a traceback).

The files are built from the pieces real ones are made of (each format's own header,
cells that are numbers, dates, units, quotes, separators, non-ASCII and NUL), shuffled
and cut, and from raw bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtuai.errors import InvalidRequest
from virtuai.sim.cluster import load_cluster
from virtuai.sim.formats import PAI_COLUMNS, PHILLY_REQUIRED, TraceFormat, read_any
from virtuai.sim.policy import load_policy
from virtuai.sim.trace import COLUMNS

HEADERS = [
    ",".join(COLUMNS),
    "id,submit_time,duration,tenant,cpu,memory,gpus",
    ",".join(PHILLY_REQUIRED),
    ",".join(PAI_COLUMNS),
    "submit_time,duration,num_gpu,num_cpu,num_inst,user",
]
PIECES = [
    "", "0", "1", "-1", "8", "1e308", "1e-308", "nan", "inf", "-0", "3.5", "1Gi", "512Mi",
    "lots", "500m", "2017-10-03 03:27:56", "None", "physics", "Pass", "Terminated", "normal",
    "high", "x" * 70, "9" * 40, '"', '""', "a,b", "\r", "\x00", "é", "[", "{",
]  # fmt: skip
KEYS = [
    "name", "pools", "tenants", "gpu", "cpu", "memory", "count", "gpus", "weight", "quota",
    "cohort", "order", "backfill", "preemption", "half_life", "las_thresholds", "min_run",
    "priority_classes", "value",
]  # fmt: skip
CELLS = st.one_of(st.sampled_from(PIECES), st.text(max_size=6))
ROWS = st.lists(st.lists(CELLS, max_size=14), max_size=6)


def _csv(header: str, rows: list[list[str]]) -> str:
    return header + "\n" + "".join(",".join(row) + "\n" for row in rows)


def _json_job() -> st.SearchStrategy[object]:
    times = st.one_of(st.none(), CELLS, st.integers(), st.floats(allow_nan=True))
    attempt = st.fixed_dictionaries(
        {},
        optional={
            "start_time": times,
            "end_time": times,
            "detail": st.one_of(
                st.none(),
                CELLS,
                st.lists(
                    st.fixed_dictionaries(
                        {}, optional={"gpus": st.one_of(st.lists(CELLS, max_size=9), CELLS)}
                    ),
                    max_size=3,
                ),
            ),
        },
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "jobid": CELLS,
            "vc": st.one_of(CELLS, st.integers()),
            "status": st.sampled_from(["Pass", "Killed", "Failed", "Running", ""]),
            "submitted_time": times,
            "attempts": st.one_of(st.none(), CELLS, st.lists(attempt, max_size=3)),
        },
    )


TRACE_TEXT = st.one_of(
    st.builds(_csv, st.sampled_from(HEADERS), ROWS),
    st.builds(_csv, st.text(max_size=40), ROWS),
    st.builds(json.dumps, st.lists(_json_job(), max_size=4)),
)
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), CELLS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)


def _reads_or_names_the_file(read: object, path: Path) -> None:
    try:
        read(path)  # type: ignore[operator]
    except InvalidRequest as exc:
        assert path.name in exc.message, exc.message


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(text=TRACE_TEXT, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_any_trace_file_is_read_or_refused_by_name(tmp_path: Path, text: str, raw: bytes) -> None:
    path = tmp_path / "trace.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if raw is None else raw)
    for fmt in TraceFormat:
        _reads_or_names_the_file(lambda p, fmt=fmt: read_any(p, fmt), path)


@FUZZ
@given(value=YAML_VALUES, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_any_cluster_or_policy_file_is_read_or_refused_by_name(
    tmp_path: Path, value: object, raw: bytes | None
) -> None:
    path = tmp_path / "file.yaml"
    if raw is None:
        path.write_text(yaml.safe_dump(value, allow_unicode=True), encoding="utf-8")
    else:
        path.write_bytes(raw)
    _reads_or_names_the_file(load_cluster, path)
    _reads_or_names_the_file(load_policy, path)
