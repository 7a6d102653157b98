"""`virtuai dataset ...`, `submit --data/--stage` and where `plan` says a job goes."""

from __future__ import annotations

from pathlib import Path

from cli_fakes import FakeApi, run

DATASET = {
    "name": "corpus",
    "tenant": "physics",
    "site": "hpc",
    "path": "/scratch/corpus",
    "created_by": "alice",
    "created_at": "2026-12-05T07:00:00Z",
    "jobs": 1,
    "copies": [
        {
            "site": "hpc",
            "path": "/home/a/virtuai/data/physics/corpus",
            "state": "copying",
            "progress": "45% (1.2 MiB at 3.00MB/s)",
            "message": "",
            "started_at": "2026-12-05T07:01:00Z",
            "finished_at": None,
        }
    ],
}


def test_dataset_add_sends_where_it_is_and_show_tells_the_copies(api: FakeApi) -> None:
    api.on("POST", "/api/v1/datasets", DATASET, status=201)
    api.on("GET", "/api/v1/datasets/corpus", DATASET)
    added = run(["dataset", "add", "corpus", "--site", "hpc", "--path", "/scratch/corpus"])
    assert added.exit_code == 0, added.output
    assert "dataset corpus: hpc:/scratch/corpus" in added.stdout
    assert api.requests[0].body == {"name": "corpus", "path": "/scratch/corpus", "site": "hpc"}
    shown = run(["dataset", "show", "corpus"])
    assert shown.exit_code == 0, shown.output
    assert "copy at hpc:/home/a/virtuai/data/physics/corpus: copying 45%" in shown.stdout


def test_dataset_paths_must_be_absolute(api: FakeApi) -> None:
    result = run(["dataset", "add", "corpus", "--path", "scratch/corpus"])
    assert result.exit_code == 2
    assert api.requests == []


def test_submit_data_and_stage(api: FakeApi) -> None:
    api.on("POST", "/api/v1/jobs", {"id": 7}, status=201)
    result = run(["submit", "--data", "corpus", "--site", "hpc", "--stage", "--", "true"])
    assert result.exit_code == 0, result.output
    body = api.requests[0].body
    assert (body["data"], body["stage"], body["site"]) == ("corpus", True, "hpc")
    alone = run(["submit", "--stage", "--", "true"])
    assert alone.exit_code == 2 and len(api.requests) == 1


def test_plan_says_where_and_why(api: FakeApi, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("type: job\ncommand: [python]\nsite: any\ndata: corpus\nstage: true\n")
    api.on(
        "POST",
        "/api/v1/jobs/plan",
        {
            "can_ever_run": True,
            "starts_now": True,
            "reason": None,
            "kind": None,
            "queue_position": None,
            "expected_start": None,
            "placement": [],
            "preempts": 0,
            "site": "hpc",
            "site_reason": "site hpc: Slurm's backlog: expected to start in 30 s",
            "candidates": [
                {"site": "local", "feasible": False, "why": "no node", "expected_wait_s": None},
                {"site": "hpc", "feasible": True, "why": "backlog", "expected_wait_s": 30},
            ],
        },
    )
    result = run(["plan", "-f", str(spec)])
    assert result.exit_code == 0, result.output
    assert api.requests[0].body["data"] == "corpus" and api.requests[0].body["stage"] is True
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "Runs at: hpc" in lines
    assert "Because: site hpc: Slurm's backlog: expected to start in 30 s" in lines
    assert any(line.startswith("hpc yes 30 s") for line in lines), lines
