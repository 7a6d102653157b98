"""``--format philly`` and ``--format pai``: public trace layouts read into jobs."""

from __future__ import annotations

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
        "j3,tensorflow,1,Failed,1200.0,1300.0,100.0,10,200,T4,alice\n",
        encoding="utf-8",
    )
    jobs = read_any(path, TraceFormat.PAI)
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
