"""``--format philly`` and ``--format pai``: public trace layouts read into jobs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from virtuai.errors import InvalidRequest
from virtuai.sim.formats import TraceFormat, read_any

Gi = 2**30


def test_philly_rows_become_jobs_of_their_virtual_cluster(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(
        "jobid,user,vc,status,submitted_time,start_time,end_time,num_gpus\n"
        "app_1,u1,ee9e8c,Pass,2017-10-03 03:27:56,2017-10-03 03:30:00,2017-10-03 04:30:00,1\n"
        "app_2,u2,b436b2,Killed,2017-10-03 03:00:00,2017-10-03 03:10:00,2017-10-03 03:20:00,16\n"
        "app_3,u2,b436b2,Running,2017-10-03 03:00:00,2017-10-03 03:10:00,None,2\n",
        encoding="utf-8",
    )
    jobs = read_any(path, TraceFormat.PHILLY)
    assert [(j.id, j.tenant, j.submit, j.duration, j.tasks, j.per_task.gpu) for j in jobs] == [
        ("app_2", "b436b2", 0.0, 600.0, 2, 8),
        ("app_1", "ee9e8c", 1676.0, 3600.0, 1, 1),
    ]
    assert jobs[1].per_task.cpu_milli == 4000 and jobs[1].per_task.memory == 32 * Gi


def test_philly_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(
        "jobid,vc,submitted_time,start_time,end_time,num_gpus\na,vc1,0,1,yesterday,1\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PHILLY)
    assert caught.value.message.startswith("philly.csv line 2: end_time: expected Unix seconds")
    path.write_text("jobid,vc,start_time\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PHILLY)
    assert "missing column 'submitted_time'" in caught.value.message


def test_pai_task_rows_without_a_header_become_gangs(tmp_path: Path) -> None:
    path = tmp_path / "pai_task_table.csv"
    path.write_text(
        "j1,worker,4,Terminated,1000.0,4600.0,600.0,29.3,50.0,V100\n"
        "j2,tensorflow,1,Running,1100.0,,100.0,10,100,T4\n"
        "j3,tensorflow,1,Failed,1200.0,1300.0,100.0,10,200,T4,alice\n"
        "j4,tensorflow,1,Terminated,,,100.0,10,200,T4\n",
        encoding="utf-8",
    )
    left_out: Counter[str] = Counter()
    jobs = read_any(path, TraceFormat.PAI, left_out=left_out)
    assert left_out == {
        "tasks whose status is not Terminated or Failed": 1,
        "jobs that never started, or still ran when the log was cut": 1,
    }
    assert [(j.id, j.tenant, j.submit, j.duration, j.tasks) for j in jobs] == [
        ("j1/worker", "pai", 0.0, 3600.0, 4),
        ("j3/tensorflow", "alice", 200.0, 100.0, 1),
    ]
    assert (jobs[0].per_task.cpu_milli, jobs[0].per_task.gpu) == (6000, 1)
    assert jobs[1].per_task.gpu == 2
    path.write_text("j1,w,1,Terminated,0,1,1,1,1,V100,bob,extra\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PAI)
    assert caught.value.message.startswith("pai_task_table.csv line 1: 12 cells")


def _attempt(start: str | None, end: str | None, *servers: int) -> dict[str, object]:
    detail = [{"ip": f"m{k}", "gpus": [f"gpu{g}" for g in range(n)]} for k, n in enumerate(servers)]
    return {"start_time": start, "end_time": end, "detail": detail}


def test_phillys_published_job_log_is_read_as_is(tmp_path: Path) -> None:
    """``cluster_job_log`` as msr-fiddle/philly-traces publishes it: a JSON list."""
    log = [
        {  # retried once: it held its GPU for both attempts (10 + 30 min)
            "status": "Pass",
            "vc": "ee9e8c",
            "jobid": "application_1",
            "user": "u1",
            "submitted_time": "2017-10-03 03:00:00",
            "attempts": [
                _attempt("2017-10-03 03:05:00", "2017-10-03 03:15:00", 1),
                _attempt("2017-10-03 03:20:00", "2017-10-03 03:50:00", 1),
            ],
        },
        {  # 12 GPUs on an 8-GPU and a 4-GPU server: a gang of 2 tasks of 6
            "status": "Killed",
            "vc": "b436b2",
            "jobid": "application_2",
            "user": "u2",
            "submitted_time": "2017-10-03 03:10:00",
            "attempts": [_attempt("2017-10-03 03:12:00", "2017-10-03 04:12:00", 8, 4)],
        },
        {  # still running when the log was cut
            "status": "Pass",
            "vc": "b436b2",
            "jobid": "application_3",
            "user": "u2",
            "submitted_time": "2017-10-03 03:11:00",
            "attempts": [_attempt("2017-10-03 03:12:00", None, 2)],
        },
        {  # never started
            "status": "Killed",
            "vc": "b436b2",
            "jobid": "application_4",
            "user": "u2",
            "submitted_time": "2017-10-03 03:11:00",
            "attempts": [],
        },
    ]
    path = tmp_path / "cluster_job_log"
    path.write_text("\n" + json.dumps(log, indent=1), encoding="utf-8")
    jobs = read_any(path, TraceFormat.PHILLY)
    assert [(j.id, j.tenant, j.submit, j.duration, j.tasks, j.per_task.gpu) for j in jobs] == [
        ("application_1", "ee9e8c", 0.0, 2400.0, 1, 1),
        ("application_2", "b436b2", 600.0, 3600.0, 2, 6),
    ]
    assert jobs[1].per_task.cpu_milli == 6 * 4000 and jobs[1].line == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"status": "Pass",', "cluster_job_log line 1 column 20: not JSON"),
        ('{"jobs": []}', "cluster_job_log: expected a JSON list of jobs"),
        ("[1]", "cluster_job_log job 1: expected a JSON object, not int"),
        (
            '[{"status": "Pass", "vc": "a", "submitted_time": "when", "attempts": []}]',
            "cluster_job_log job 1: submitted_time: expected Unix seconds or a date",
        ),
        (
            '[{"status": "Pass", "vc": "a", "attempts": [{"detail": "m1"}]}]',
            "cluster_job_log job 1: detail: expected a list of {ip, gpus: [...]} objects",
        ),
    ],
)
def test_a_broken_job_log_is_named_where_it_breaks(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cluster_job_log"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PHILLY)
    assert caught.value.message.startswith(message), caught.value.message


def test_philly_gangs_that_are_not_whole_servers_are_rounded_up_to_equal_tasks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "philly.csv"
    path.write_text(
        "jobid,vc,submitted_time,start_time,end_time,num_gpus\n"
        "a,vc1,0,0,60,10\nb,vc1,0,0,60,24\nc,vc1,0,0,60,20\nd,vc1,0,0,60,\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PHILLY)
    assert caught.value.message == "philly.csv line 5: num_gpus: missing"
    path.write_text(path.read_text(encoding="utf-8").rsplit("d,", 1)[0], encoding="utf-8")
    jobs = read_any(path, TraceFormat.PHILLY)
    assert [(j.tasks, j.per_task.gpu) for j in jobs] == [(2, 5), (3, 8), (3, 7)]


def test_pai_tasks_take_user_and_submission_from_the_job_table_beside_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "pai_task_table.csv").write_text(
        "j1,worker,2,Terminated,1000.0,4600.0,600.0,29.3,100.0,V100\n"
        "j1,ps,1,Terminated,1000.0,4600.0,400.0,10,,\n"
        "j2,tensorflow,1,Terminated,1500.0,1600.0,100.0,10,50,T4,carol\n"
        "j3,tensorflow,1,Failed,2000.0,2100.0,100.0,nan,nan,T4\n",
        encoding="utf-8",
    )
    (tmp_path / "pai_job_table.csv").write_text(
        "j0,i0,zed,Terminated,1.0,2.0\n"
        "j1,i1,58540f191766,Terminated,400.0,4600.0\n"  # waited 600 s before its launch
        "j2,i2,dave,Terminated,1400.0,1600.0\n",  # the task row names its own user
        encoding="utf-8",
    )
    jobs = read_any(tmp_path / "pai_task_table.csv", TraceFormat.PAI)
    assert [(j.id, j.tenant, j.submit, j.duration, j.tasks) for j in jobs] == [
        ("j1/worker", "58540f191766", 0.0, 3600.0, 2),
        ("j1/ps", "58540f191766", 0.0, 3600.0, 1),
        ("j2/tensorflow", "carol", 1100.0, 100.0, 1),
        ("j3/tensorflow", "pai", 1600.0, 100.0, 1),  # not in the job table
    ]
    assert jobs[1].per_task.gpu == 0 and jobs[3].per_task.memory == 1


def test_the_pai_simulators_job_list_is_read_by_its_header(tmp_path: Path) -> None:
    path = tmp_path / "pai_job_duration_estimate_100K.csv"
    path.write_text(
        "job_id,user,num_gpu,num_cpu,submit_time,duration,num_inst,gpu_type\n"
        "1,ae8ed1,0.5,6,100,729,1,T4\n"
        "2,ae8ed1,8,64,40,13075,2,V100\n"
        "3,bf05e2,,4,40,10,1,CPU\n",
        encoding="utf-8",
    )
    jobs = read_any(path, TraceFormat.PAI)
    # as Alibaba's simulator reads it: num_inst instances of num_gpu GPUs and num_cpu CPUs
    assert [(j.id, j.tenant, j.submit, j.duration, j.tasks, j.per_task.gpu) for j in jobs] == [
        ("2", "ae8ed1", 0.0, 13075.0, 2, 8),
        ("3", "bf05e2", 0.0, 10.0, 1, 0),
        ("1", "ae8ed1", 60.0, 729.0, 1, 1),
    ]
    assert [j.per_task.cpu_milli for j in jobs] == [64000, 4000, 6000]
    assert jobs[0].per_task.memory == 8 * 32 * Gi and jobs[1].per_task.memory == 32 * Gi
    path.write_text("submit_time,duration,num_gpu\n5,-1,1\n", encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, TraceFormat.PAI)
    assert caught.value.message == (
        "pai_job_duration_estimate_100K.csv line 2: duration: expected a number >= 0, not '-1'"
    )


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        (
            TraceFormat.PAI,
            'j1,w,1,Terminated,0,1,1,1,1,V100\nj2,"w,1,Terminated,0,1,1,1,1,V100\n',
            'pai.csv line 2: a quote (") opens a cell and never closes',
        ),
        (
            TraceFormat.PHILLY,
            "jobid,vc,submitted_time,start_time,end_time,num_gpus\n"
            'a,vc1,0,1,2,1\nb,"vc1,0,1,2,1\nc,vc1,0,1,2,1\n',
            'pai.csv line 3: a quote (") opens a cell and never closes',
        ),
        (
            TraceFormat.PHILLY,
            "jobid,vc,submitted_time,start_time,end_time,num_gpus\na,vc1,0,1,2,1,extra\n",
            "pai.csv line 2: 7 cells but the header names 6",
        ),
        # A typo such as 1e300 is named where it is, instead of overflowing the metrics.
        (
            TraceFormat.PHILLY,
            "jobid,vc,submitted_time,start_time,end_time,num_gpus\na,vc1,0,10,1e300,1\n",
            "pai.csv line 2: end_time: expected Unix seconds before the year 10000, not '1e300'",
        ),
        (
            TraceFormat.PHILLY,
            "jobid,vc,submitted_time,start_time,end_time,num_gpus\na,vc1,0,10,20,1e300\n",
            "pai.csv line 2: num_gpus: expected a number at most 1,000,000,000,000, not '1e300'",
        ),
        (
            TraceFormat.PAI,
            "submit_time,duration,num_gpu\n5,1e300,1\n",
            "pai.csv line 2: duration: expected a number at most 1,000,000,000,000, not '1e300'",
        ),
    ],
)
def test_a_bad_row_or_cell_is_named_by_the_line_where_its_row_began(
    tmp_path: Path, fmt: TraceFormat, text: str, message: str
) -> None:
    path = tmp_path / "pai.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidRequest) as caught:
        read_any(path, fmt)
    assert caught.value.message == message
