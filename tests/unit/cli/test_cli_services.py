"""`virtuai service logs` and `virtuai service scale` against a fake server."""

from __future__ import annotations

from cli_fakes import FakeApi, run

SPEC = {
    "type": "service",
    "tenant": "physics",
    "name": "sk",
    "command": ["python", "app.py"],
    "env": {"MODEL_VERSION": "2"},
    "replicas": {"min": 0, "max": 2, "target_rps": 50.0},
}


def _service(*replicas: tuple[int, str]) -> dict[str, object]:
    return {
        "name": "sk",
        "spec": SPEC,
        "replicas": [{"job_id": j, "state": state} for j, state in replicas],
    }


def test_logs_are_the_newest_started_replicas_not_a_pending_ones(api: FakeApi) -> None:
    # A roll's new replica (281) waits for room: it has written nothing yet.
    api.on("GET", "/api/v1/services/sk", _service((280, "running"), (281, "pending")))
    api.on("GET", "/api/v1/jobs/280/logs", {"data": "model loaded\n", "offset": 13})
    result = run(["service", "logs", "sk"])
    assert result.exit_code == 0, result.output
    assert "model loaded" in result.stdout
    assert "replica job 280" in result.stderr and "281" in result.stderr
    assert api.sent("GET", "/api/v1/jobs/281/logs") == []


def test_logs_of_a_service_whose_replicas_have_not_started_say_so(api: FakeApi) -> None:
    api.on("GET", "/api/v1/services/sk", _service((281, "pending")))
    result = run(["service", "logs", "sk"])
    assert result.exit_code == 1
    assert "no replica has started yet" in result.stderr


def test_scale_changes_only_the_replicas(api: FakeApi) -> None:
    api.on("GET", "/api/v1/services/sk", _service())
    api.on("POST", "/api/v1/services", {"replicas_min": 2, "replicas_max": 2, "ready": 1})
    result = run(["service", "scale", "sk", "--replicas", "2"])
    assert result.exit_code == 0, result.output
    assert "2-2 replicas" in result.stdout
    assert api.sent("POST", "/api/v1/services")[0].body == {
        **SPEC,
        "replicas": {"min": 2, "max": 2},
    }
    run(["service", "scale", "sk", "--max", "3"])
    assert api.sent("POST", "/api/v1/services")[1].body["replicas"] == {
        "min": 0,
        "max": 3,
        "target_rps": 50.0,
    }


def test_scale_wants_one_way_of_saying_it(api: FakeApi) -> None:
    for args in ([], ["--replicas", "1", "--min", "0"]):
        result = run(["service", "scale", "sk", *args])
        assert result.exit_code == 2 and "--replicas" in result.stderr
    assert api.requests == []
