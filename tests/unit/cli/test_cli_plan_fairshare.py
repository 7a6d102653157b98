"""`virtuai plan -f` and `virtuai fairshare`."""

from __future__ import annotations

from pathlib import Path

from cli_fakes import FakeApi, run

SPEC = "type: job\ncommand: [python, train.py]\nresources: {cpu: 2, gpu: 1}\ntime: '1:00:00'\n"


def test_plan_sends_the_spec_and_explains_the_answer(api: FakeApi, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    api.on(
        "POST",
        "/api/v1/jobs/plan",
        {
            "can_ever_run": True,
            "starts_now": False,
            "reason": "waiting for resources: short of 1 gpu",
            "kind": "capacity",
            "queue_position": 3,
            "expected_start": "2026-11-22T10:00:00Z",
            "placement": [],
            "preempts": 0,
        },
    )
    result = run(["plan", "-f", str(spec)])
    assert result.exit_code == 0, result.output
    (sent,) = api.requests
    assert sent.body["command"] == ["python", "train.py"]
    assert sent.body["resources"] == {"cpu": 2, "gpu": 1}
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "Starts now: no" in lines
    assert "Waits for: waiting for resources: short of 1 gpu" in lines
    assert "Queue position: 3" in lines


def test_plan_of_a_job_that_can_never_run_exits_1(api: FakeApi, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    api.on(
        "POST",
        "/api/v1/jobs/plan",
        {
            "can_ever_run": False,
            "starts_now": False,
            "reason": "can never run: no GPU node",
            "kind": "never",
            "queue_position": None,
            "expected_start": None,
            "placement": [],
            "preempts": 0,
        },
    )
    result = run(["plan", "-f", str(spec)])
    assert result.exit_code == 1
    assert "can never run: no GPU node" in result.stdout


def test_fairshare_table(api: FakeApi) -> None:
    api.on(
        "GET",
        "/api/v1/fairshare",
        [
            {
                "tenant": "ml",
                "weight": 2.0,
                "norm_shares": 0.5,
                "decayed_usage": {"cpu_hours": 10.0, "memory_gib_hours": 4.0, "gpu_hours": 1.5},
                "allocation": {"cpu": 1.0, "memory": 0, "gpu": 0},
                "usage": 0.25,
                "dominant": "gpu",
                "factor": 0.707,
            }
        ],
    )
    result = run(["fairshare"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["ml", "2", "0.500", "10.00", "1.50", "4.00", "0.250", "(gpu)", "0.707"] in lines
