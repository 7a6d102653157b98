"""Trace CSV: reading, defaults, and errors that name the line and the column."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import pytest

from virtuai.domain.resources import Resources
from virtuai.errors import InvalidRequest
from virtuai.sim.cluster import DEFAULT_PRIORITIES, load_cluster
from virtuai.sim.formats import TraceFormat, read_any
from virtuai.sim.trace import TraceJob, parse_trace, read_trace, write_trace

Gi = 2**30
HEADER = "submit_time,duration,walltime,tenant,cpu,memory,gpus,tasks,priority\n"


def parse(text: str) -> list[TraceJob]:
    return parse_trace(io.StringIO(text), "t.csv")


def error_of(text: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(text)
    return caught.value


def test_reads_units_and_sorts_by_submission() -> None:
    jobs = parse(
        HEADER
        + "60,120,300,physics,500m,4Gi,1,2,high\n"
        + "0,2h,,biology,2,512Mi,0,1,low\n"
        + "30,90s,01:00:00,biology,1,1G,,,\n"
    )
    assert [j.id for j in jobs] == ["2", "3", "1"]  # row numbers, in submission order
    first, second, third = jobs
    assert first.duration == 7200 and math.isinf(first.walltime)
    assert first.priority == DEFAULT_PRIORITIES["low"].value and first.preemptible
    assert second.duration == 90 and second.walltime == 3600 and second.tasks == 1
    assert second.per_task == Resources(1000, 10**9, 0)
    assert second.priority == DEFAULT_PRIORITIES["normal"].value
    assert third.per_task == Resources(500, 4 * Gi, 1) and third.tasks == 2
    assert third.total == Resources(1000, 8 * Gi, 2)
    assert not third.preemptible  # the "high" class is not preemptible
    assert third.line == 2


def test_walltime_cuts_the_run() -> None:
    (short,) = parse(HEADER + "0,500,300,physics,1,1Gi,0,1,normal\n")
    assert short.run_s == 300 and short.times_out


def test_columns_in_any_order_extra_ignored_optional_missing() -> None:
    jobs = parse(
        "Memory,CPU,tenant,duration,submit_time,comment,gpu,id,pool\n"
        "2Gi,4,physics,10,5,whatever,2,train-1,gpu\n"
    )
    (j,) = jobs
    assert (j.id, j.pool, j.per_task) == ("train-1", "gpu", Resources(4000, 2 * Gi, 2))
    assert math.isinf(j.walltime) and j.tasks == 1


def test_numeric_priority_takes_preemptibility_of_a_class_with_that_value() -> None:
    a, b = parse(HEADER + "0,1,,t,1,1Gi,0,1,1000\n" + "0,1,,t,1,1Gi,0,1,42\n")
    assert (a.priority, a.preemptible) == (1000, False)
    assert (b.priority, b.preemptible) == (42, True)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("0,10,,physics,1,lots,0,1,normal", "memory"),
        ("0,10,,physics,two,1Gi,0,1,normal", "cpu"),
        ("x,10,,physics,1,1Gi,0,1,normal", "submit_time"),
        ("0,-5,,physics,1,1Gi,0,1,normal", "duration"),
        ("0,10,0,physics,1,1Gi,0,1,normal", "walltime"),
        ("0,10,,Physics!,1,1Gi,0,1,normal", "tenant"),
        ("0,10,,physics,1,1Gi,-1,1,normal", "gpus"),
        ("0,10,,physics,1,1Gi,0,0,normal", "tasks"),
        ("0,10,,physics,1,1Gi,0,1,urgent", "priority"),
        # Beyond 317 years: a typo, which would overflow the metrics' sums of squares.
        ("0,1e300,,physics,1,1Gi,0,1,normal", "duration"),
        ("10000000001,10,,physics,1,1Gi,0,1,normal", "submit_time"),
        ("0,10,1e11,physics,1,1Gi,0,1,normal", "walltime"),
    ],
)
def test_errors_name_the_line_and_the_column(row: str, field: str) -> None:
    good = "0,10,,physics,1,1Gi,0,1,normal\n"
    exc = error_of(HEADER + good + good + row + "\n")
    assert exc.field == field
    assert exc.message.startswith(f"t.csv line 4: {field}: "), exc.message


def test_missing_column_and_duplicate_id() -> None:
    exc = error_of("submit_time,duration,tenant,cpu\n0,1,a,1\n")
    assert exc.field == "memory" and "line 1" in exc.message
    exc = error_of("id,submit_time,duration,tenant,cpu,memory\na,0,1,t,1,1Gi\na,0,1,t,1,1Gi\n")
    assert exc.field == "id" and exc.message.startswith("t.csv line 3: id:")


def test_empty_file_and_blank_lines() -> None:
    assert "line 1" in error_of("").message
    assert len(parse(HEADER + "\n0,1,,t,1,1Gi,0,1,normal\n\n")) == 1


def test_a_spreadsheets_byte_order_mark_is_read_past(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "0,1,,t,1,1Gi,0,1,normal\n").encode())
    assert [job.tenant for job in read_trace(path)] == ["t"]


@pytest.mark.parametrize("reader", ["trace", "philly", "pai", "cluster"])
def test_a_file_that_is_not_utf8_is_named_with_the_line_of_its_first_bad_byte(
    tmp_path: Path, reader: str
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"x" * 9000 + b",\xe9t\xe9\n")  # beyond the decoder's first chunk
    with pytest.raises(InvalidRequest) as caught:
        if reader == "cluster":
            load_cluster(path)
        elif reader == "trace":
            read_trace(path)
        else:
            read_any(path, TraceFormat(reader))
    assert caught.value.message == (
        "latin1.csv line 1: not UTF-8 text (byte 0xe9 at column 9002); save the file as UTF-8"
    )


def test_write_then_read_gives_the_same_jobs() -> None:
    jobs = parse(
        HEADER
        + "0,1.5,,physics,0.25,1500000000,0,1,normal\n"
        + "7,3600,7200,biology,64,512Gi,8,4,7\n"
    )
    buffer = io.StringIO()
    write_trace(jobs, buffer)
    again = parse_trace(io.StringIO(buffer.getvalue()), "again.csv")
    assert [replace(j, line=0) for j in again] == [replace(j, line=0) for j in jobs]


def test_a_jobs_own_checkpoint_cost_is_read_and_written_back() -> None:
    jobs = parse(
        "submit_time,duration,tenant,cpu,memory,checkpoint_interval,restart_overhead\n"
        "0,1h,physics,1,1Gi,10m,30\n"
        "1,1h,physics,1,1Gi,0,\n"
        "2,1h,physics,1,1Gi,,\n"
    )
    assert [(j.checkpoint_interval, j.restart_overhead) for j in jobs] == [
        (600.0, 30.0),
        (0.0, None),  # never checkpoints; restarts cost what the policy says
        (None, None),
    ]
    buffer = io.StringIO()
    write_trace(jobs, buffer)
    assert buffer.getvalue().splitlines()[0].endswith(",checkpoint_interval,restart_overhead")
    again = parse_trace(io.StringIO(buffer.getvalue()), "again.csv")
    assert [replace(j, line=0) for j in again] == [replace(j, line=0) for j in jobs]
    exc = error_of("submit_time,duration,tenant,cpu,memory,checkpoint_interval\n0,1,a,1,1Gi,-5\n")
    assert exc.message.startswith("t.csv line 2: checkpoint_interval: "), exc.message


def test_a_gpu_column_under_another_name_is_an_error_not_a_cpu_job() -> None:
    text = "submit_time,duration,tenant,cpu,memory,num_gpus\n0,10,a,1,1Gi,4\n"
    error = error_of(text)
    assert error.message.startswith("t.csv line 1: unknown column 'num_gpus'; did you mean 'gpus'?")
    assert error.field == "num_gpus"


def test_a_row_with_more_cells_than_the_header_is_an_error() -> None:
    error = error_of(HEADER + "0,10,,a,1,1Gi,0,1,normal\n5,10,,a,1,1Gi,0,1,normal,oops\n")
    assert error.message == "t.csv line 3: 10 cells but the header names 9 columns"


def test_an_unterminated_quote_is_reported_where_it_opens_briefly() -> None:
    rows = "".join(f"{k},10,,a,1,1Gi,0,1,normal\n" for k in range(5))
    error = error_of(HEADER + rows + '9,10,,"a,1,1Gi,0,1,normal\n' + rows)
    assert error.message == 't.csv line 7: a quote (") opens a cell and never closes'


def test_a_tenant_the_cluster_does_not_list_is_an_error() -> None:
    from virtuai.sim.trace import check_tenants

    jobs = parse(HEADER + "0,10,,physics,1,1Gi,0,1,normal\n1,10,,phisics,1,1Gi,0,1,normal\n")
    check_tenants(jobs, [], "t.csv")  # a cluster without tenants takes any
    with pytest.raises(InvalidRequest) as caught:
        check_tenants(jobs, ["physics", "biology"], "t.csv")
    assert caught.value.message.startswith(
        "t.csv line 3: tenant: unknown tenant 'phisics'; the cluster file lists biology, physics"
    )


def test_a_pool_the_cluster_does_not_list_is_an_error() -> None:
    from virtuai.sim.trace import check_pools

    jobs = parse(
        "id,submit_time,duration,tenant,cpu,memory,pool\n"
        "a,0,10,physics,1,1Gi,\nb,0,10,physics,1,1Gi,gpu\nc,0,10,physics,1,1Gi,gpus\n"
    )
    with pytest.raises(InvalidRequest) as caught:
        check_pools(jobs, ["cpu", "gpu"], "t.csv")
    assert caught.value.message == (
        "t.csv line 4: pool: unknown pool 'gpus'; the cluster file lists cpu, gpu "
        "(or leave the cell empty: any pool)"
    )
    check_pools(jobs[:2], ["cpu", "gpu"], "t.csv")


@pytest.mark.parametrize(
    ("first", "hint"),
    [
        ('[{"status": "Pass", "vc": "ee9e8c"}]', "Philly's job log? use --format philly"),
        ("jobid,vc,submitted_time,start_time,end_time,num_gpus", "use --format philly"),
        ("j1,worker,4,Terminated,1000.0,4600.0,600.0,29.3,50.0,V100", "use --format pai"),
    ],
)
def test_a_public_trace_without_its_format_is_named(first: str, hint: str) -> None:
    exc = error_of(first + "\n")
    assert exc.message.startswith("t.csv line 1: not a trace of ours (no submit_time column)")
    assert exc.message.endswith(hint)
