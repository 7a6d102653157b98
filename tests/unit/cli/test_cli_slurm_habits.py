"""`virtuai squeue`, `sacct`, `scancel`, `sinfo` and `slurm install-shims` against a fake API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_fakes import FakeApi, job, run

JOBS = "/api/v1/jobs"
NODES = [
    {
        "name": "node-a",
        "site": "local",
        "pool": "gpu",
        "capacity": {"cpu": 8, "memory": 2**34, "gpu": 2},
        "allocated": {"cpu": 1, "memory": 2**30, "gpu": 1},
        "gpus": [],
        "updated_at": "2026-05-01T10:00:00Z",
    }
]


@pytest.fixture
def queue(api: FakeApi) -> FakeApi:
    api.on(
        "GET",
        JOBS,
        [
            job(id=7, state="running", user="alice", array_id=None, array_index=None),
            job(
                id=8,
                state="pending",
                user="bob",
                placement=[],
                started_at=None,
                reason="waiting for job 7 (afterok)",
                array_id=None,
                array_index=None,
            ),
            job(
                id=9,
                state="succeeded",
                user="alice",
                exit_code=0,
                finished_at="2026-05-01T10:01:05Z",
                array_id=None,
                array_index=None,
            ),
            job(
                id=11,
                name="sweep",
                state="pending",
                user="alice",
                placement=[],
                started_at=None,
                array_id=10,
                array_index=1,
                reason="queued",
            ),
        ],
    )
    api.on("GET", "/api/v1/nodes", NODES)
    api.on("GET", "/api/v1/whoami", {"name": "alice"})
    return api


def test_squeue_shows_active_jobs_with_slurm_columns(queue: FakeApi) -> None:
    result = run(["squeue"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == [
        "JOBID",
        "PARTITION",
        "NAME",
        "USER",
        "ST",
        "TIME",
        "NODES",
        "NODELIST(REASON)",
    ]
    assert [line[0] for line in lines[1:]] == ["7", "8", "10_1"]
    assert lines[1][4] == "R" and lines[1][-1] == "node-a"
    assert lines[2][4] == "PD" and lines[2][-1] == "(Dependency)"
    assert lines[3][-1] == "(Priority)"


def test_squeue_filters(queue: FakeApi) -> None:
    def ids(*args: str) -> list[str]:
        result = run(["squeue", "-h", "-o", "%i", *args])
        assert result.exit_code == 0, result.output
        return result.stdout.split()

    assert ids("-u", "bob") == ["8"]
    assert ids("--me") == ["7", "10_1"]
    assert ids("-t", "PD") == ["8", "10_1"]
    assert ids("-t", "all", "-j", "9,10") == ["9", "10_1"]
    assert ids("-p", "gpu") == ["7"]
    assert run(["squeue", "-t", "XX"]).exit_code == 2


def test_sacct_lists_jobs_and_batch_steps(queue: FakeApi) -> None:
    result = run(["sacct", "-j", "9"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[2] == ["9", "train", "gpu", "ml", "1", "COMPLETED", "0:0"]
    assert rows[3][0] == "9.batch"
    result = run(["sacct", "-X", "-j", "9", "--format", "JobID,State,ExitCode", "-n"])
    assert result.stdout.split() == ["9", "COMPLETED", "0:0"]
    assert run(["sacct", "--format", "Nope"]).exit_code == 2


def test_scancel_by_id_user_and_state(queue: FakeApi) -> None:
    for ident in (7, 8, 11):
        queue.on("POST", f"{JOBS}/{ident}/cancel", job(id=ident, state="cancelled"))
    assert run(["scancel", "7"]).exit_code == 0
    assert [r.path for r in queue.requests if r.method == "POST"] == [f"{JOBS}/7/cancel"]
    assert run(["scancel", "-u", "alice", "-t", "PD"]).exit_code == 0
    assert queue.requests[-1].path == f"{JOBS}/11/cancel"
    result = run(["scancel", "10_1"])
    assert result.exit_code == 0 and queue.requests[-1].path == f"{JOBS}/11/cancel"
    missing = run(["scancel", "99"])
    assert missing.exit_code == 1 and "Invalid job id specified" in missing.stderr
    signal = run(["scancel", "-s", "USR1", "7"])
    assert signal.exit_code == 1 and "cannot send SIGUSR1" in signal.stderr


def test_sinfo(queue: FakeApi) -> None:
    result = run(["sinfo"])
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["PARTITION", "AVAIL", "TIMELIMIT", "NODES", "STATE", "NODELIST"],
        ["gpu*", "up", "infinite", "1", "mix", "node-a"],
    ]


def test_install_and_uninstall_shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho the real one\n")
    result = run(["slurm", "install-shims", "--prefix", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sinfo exists and is not a virtuai shim" in result.stderr
    shims = sorted(p.name for p in tmp_path.iterdir())
    assert shims == ["sacct", "sbatch", "scancel", "sinfo", "squeue", "srun"]
    monkeypatch.setenv("VIRTUAI_URL", "http://127.0.0.1:9")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n#SBATCH -t 5 -n 2\nrun\n")
    shown = subprocess.run(
        [str(tmp_path / "sbatch"), "--test-only", "--json", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"ntasks": 2' in shown.stdout
    run(["slurm", "install-shims", "--prefix", str(tmp_path), "--uninstall"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.sh", "sinfo"]
    assert "the real one" in (tmp_path / "sinfo").read_text()
