"""squeue, sacct and sinfo views: Slurm's letters, columns and formats from virtuai's rows."""

from __future__ import annotations

import datetime as dt

import pytest

from virtuai.slurmfront import report

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
VIEW = report.View(NOW, {"lab-0": "gpu", "lab-1": "gpu", "cpu-0": "cpu"})
RUNNING = {
    "id": 12,
    "name": "train",
    "user": "ada",
    "tenant": "ml",
    "state": "running",
    "reason": "running on lab-0, lab-1",
    "resources": {"cpu": 4, "memory": 8 * 2**30, "gpu": 1},
    "tasks": 2,
    "time_limit": 3600,
    "priority": "normal",
    "placement": [{"index": 0, "node": "lab-0"}, {"index": 1, "node": "lab-1"}],
    "submitted_at": "2026-05-01T11:00:00Z",
    "started_at": "2026-05-01T11:58:55Z",
    "finished_at": None,
    "exit_code": None,
    "array_id": None,
    "array_index": None,
}
PENDING = {
    **RUNNING,
    "id": 14,
    "state": "pending",
    "reason": "waiting for free capacity: 8 CPUs",
    "placement": [],
    "started_at": None,
    "array_id": 13,
    "array_index": 1,
}


@pytest.mark.parametrize(
    ("state", "letter", "name"),
    [
        ("pending", "PD", "PENDING"),
        ("running", "R", "RUNNING"),
        ("preempting", "CG", "COMPLETING"),
        ("succeeded", "CD", "COMPLETED"),
        ("failed", "F", "FAILED"),
        ("timed_out", "TO", "TIMEOUT"),
        ("cancelled", "CA", "CANCELLED"),
        ("preempted", "PR", "PREEMPTED"),
    ],
)
def test_state_letters(state: str, letter: str, name: str) -> None:
    assert (report.state_letter(state), report.state_name(state)) == (letter, name)
    assert state in report.virtuai_states(letter)
    assert state in report.virtuai_states(name.lower())


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown job state"):
        report.virtuai_states("PD,XX")


def test_squeue_default_columns() -> None:
    lines = report.squeue_lines([RUNNING, PENDING], VIEW, report.SQUEUE_DEFAULT)
    assert lines == [
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)",
        "                12       gpu    train      ada  R       1:05      2 lab-[0-1]",
        "              13_1         -    train      ada PD       0:00      1 (Resources)",
    ]


def test_squeue_custom_format() -> None:
    lines = report.squeue_lines([RUNNING], VIEW, "%i|%-6j|%T|%l|%a", header=False)
    assert lines == ["12|train |RUNNING|1:00:00|ml"]
    with pytest.raises(ValueError, match="unknown format field"):
        report.squeue_lines([RUNNING], VIEW, "%W")


def test_sacct_default_and_steps() -> None:
    done = {**RUNNING, "state": "failed", "exit_code": 3, "finished_at": "2026-05-01T11:59:55Z"}
    lines = report.sacct_lines([done], VIEW, report.SACCT_DEFAULT, steps=True)
    assert lines[0].split() == [
        "JobID",
        "JobName",
        "Partition",
        "Account",
        "AllocCPUS",
        "State",
        "ExitCode",
    ]
    assert lines[2].split() == ["12", "train", "gpu", "ml", "8", "FAILED", "3:0"]
    assert lines[3].split()[:2] == ["12.batch", "batch"]
    only = report.sacct_lines([done], VIEW, "JobID,Elapsed%12", steps=False, header=False)
    assert only == ["12".ljust(10) + " " + "00:01:00".rjust(12)]


def test_sinfo_rows_per_pool_and_state() -> None:
    nodes = [
        {"name": "lab-0", "pool": "gpu", "capacity": {"cpu": 8}, "allocated": {"cpu": 8}},
        {"name": "lab-1", "pool": "gpu", "capacity": {"cpu": 8}, "allocated": {"cpu": 0}},
        {"name": "lab-2", "pool": "gpu", "capacity": {"cpu": 8}, "allocated": {"cpu": 0}},
        {"name": "cpu-0", "pool": "cpu", "capacity": {"cpu": 8}, "allocated": {"cpu": 2}},
    ]
    assert [line.split() for line in report.sinfo_lines(nodes)] == [
        ["PARTITION", "AVAIL", "TIMELIMIT", "NODES", "STATE", "NODELIST"],
        ["cpu", "up", "infinite", "1", "mix", "cpu-0"],
        ["gpu*", "up", "infinite", "1", "alloc", "lab-0"],
        ["gpu*", "up", "infinite", "2", "idle", "lab-[1-2]"],
    ]


def test_elapsed_formats() -> None:
    assert report.slurm_elapsed(65) == "1:05"
    assert report.slurm_elapsed(3725) == "1:02:05"
    assert report.slurm_elapsed(90061) == "1-01:01:01"
