"""`virtuai jobs`, `job`, `cancel`, `wait` and `logs`."""

from __future__ import annotations

from typing import Any

import pytest
from cli_fakes import FakeApi, FakeClock, Request, job, run, serve, stop

JOB7 = "/api/v1/jobs/7"


def test_jobs_table(api: FakeApi) -> None:
    waiting = job(id=8, name="eval", state="pending", started_at=None, reason="x" * 80)
    api.on("GET", "/api/v1/jobs", [job(), waiting])
    result = run(["jobs", "--tenant", "ml", "--state", "running", "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert api.requests[0].query == {"tenant": "ml", "state": "running", "limit": "5"}
    header, first, second = result.stdout.splitlines()
    assert header.split() == [
        "ID", "NAME", "TENANT", "USER", "STATE", "TASKS", "CPU", "MEM", "GPU",
        "TIME", "LIMIT", "ELAPSED", "REASON",
    ]  # fmt: skip
    assert first.split()[:11] == [
        "7", "train", "ml", "alice", "running", "2", "0.5", "2Gi", "1", "01:00:00",
        first.split()[10],
    ]  # fmt: skip
    assert second.split()[10] == "-"  # not started: no elapsed time
    assert second.endswith("x" * 37 + "...")  # long reasons are cut


def test_jobs_rejects_an_unknown_state(api: FakeApi) -> None:
    assert run(["jobs", "--state", "sleeping"]).exit_code == 2
    assert api.requests == []


def test_jobs_json_is_the_apis(api: FakeApi) -> None:
    api.on("GET", "/api/v1/jobs", [job()])
    result = run(["jobs", "--json"])
    assert '"exit_code": null' in result.stdout
    assert '"reason": ""' in result.stdout


def test_job_detail(api: FakeApi) -> None:
    detail = job(
        state="failed",
        reason="task 0 exited with 3",
        exit_code=3,
        finished_at="2026-05-01T10:01:05Z",
        env={"SECRET": "hunter2", "A": "1"},
        workdir="/srv",
        events=[
            {
                "at": "2026-05-01T10:00:00Z",
                "from_state": None,
                "to_state": "pending",
                "reason": "submitted",
                "actor": "alice",
            }
        ],
        task_runs=[
            {
                "attempt": 0,
                "index": 0,
                "node": "node-a",
                "outcome": "exited",
                "exit_code": 3,
                "message": "",
                "started_at": "2026-05-01T10:00:05Z",
                "finished_at": "2026-05-01T10:01:05Z",
            }
        ],
    )
    api.on("GET", JOB7, detail)
    result = run(["job", "7"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "State:          failed" in lines
    assert "Reason:         task 0 exited with 3" in lines
    assert "Exit code:      3" in lines
    assert "Elapsed:        00:01:00" in lines
    assert "Command:        python -c 'print(1)'" in lines
    assert "Env:            A, SECRET" in lines
    assert "hunter2" not in result.stdout  # values only with --json
    assert "Placement:" in lines and "Events:" in lines and "Task runs:" in lines
    assert any(line.split()[-2:] == ["alice", "submitted"] for line in lines)


def test_job_id_must_be_a_number(api: FakeApi) -> None:
    assert run(["job", "seven"]).exit_code == 2


def test_cancel(api: FakeApi) -> None:
    api.on("GET", JOB7, job(state="pending"))
    api.on("POST", f"{JOB7}/cancel", job(state="cancelled", reason="cancelled by alice"))
    result = run(["cancel", "7"])
    assert (result.exit_code, result.stdout) == (0, "job 7 cancelled: cancelled by alice\n")


def test_cancel_of_a_running_job_is_a_request(api: FakeApi) -> None:
    api.on("GET", JOB7, job(state="running"))
    api.on("POST", f"{JOB7}/cancel", job(state="running", reason="running on node-a"))
    result = run(["cancel", "7"])
    assert result.stdout == "job 7: cancel requested (state: running)\n"


def test_cancel_of_an_array_id_cancels_every_element(api: FakeApi) -> None:
    api.on("GET", JOB7, job(array_id=7, array_index=0))
    api.on("POST", "/api/v1/arrays/7/cancel", [job(), job(id=8)])
    result = run(["cancel", "7"])
    assert result.stdout == "array 7: cancel requested for 2 element(s)\n"


def test_an_array_element_is_named_array_index(api: FakeApi) -> None:
    elements = [job(id=7, array_id=7, array_index=0), job(id=8, array_id=7, array_index=1)]
    api.on("GET", "/api/v1/jobs", elements)
    api.on("POST", "/api/v1/jobs/8/cancel", job(id=8, state="cancelled", reason="by request"))
    result = run(["cancel", "7_1"])
    assert (result.exit_code, result.stdout) == (0, "job 7_1 cancelled: by request\n")
    assert run(["cancel", "7_5"]).exit_code == 2  # no such element: a usage error


def test_wait_succeeds(api: FakeApi, clock: FakeClock) -> None:
    api.on("GET", JOB7, job(state="pending"), job(state="running"), job(state="succeeded"))
    result = run(["wait", "7"], clock)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert clock.sleeps == [0.5, 1.0]  # backs off


def test_wait_reports_a_failure(api: FakeApi, clock: FakeClock) -> None:
    api.on("GET", JOB7, job(state="failed", exit_code=3, reason="task 1 exited with 3"))
    result = run(["wait", "7"], clock)
    assert result.exit_code == 1
    assert result.stderr == "job 7 failed with exit code 3: task 1 exited with 3\n"


def test_wait_reports_other_endings(api: FakeApi, clock: FakeClock) -> None:
    api.on("GET", JOB7, job(state="timed_out", reason="time limit 01:00:00 reached"))
    result = run(["wait", "7"], clock)
    assert (result.exit_code, result.stderr) == (
        1,
        "job 7 timed_out: time limit 01:00:00 reached\n",
    )


def test_wait_times_out_with_124(api: FakeApi, clock: FakeClock) -> None:
    api.on("GET", JOB7, job(state="running"))
    result = run(["wait", "7", "--timeout", "3"], clock)
    assert result.exit_code == 124
    assert result.stderr == "error: gave up after 3 s waiting for job 7 (state: running)\n"
    assert sum(clock.sleeps) == 3


def test_wait_for_an_unknown_job(api: FakeApi, clock: FakeClock) -> None:
    api.on("GET", JOB7, (404, {"code": "not_found", "message": "no job 7", "field": None}))
    result = run(["wait", "7"], clock)
    assert (result.exit_code, result.stderr) == (1, "error: no job 7\n")


def logs_of(chunks: dict[str, list[dict[str, Any]]]) -> Any:
    """A log endpoint that serves ``chunks[stream]`` in turn, checking the offsets asked for."""

    def respond(request: Request) -> tuple[int, Any]:
        queue = chunks[request.query["stream"]]
        chunk = queue.pop(0) if len(queue) > 1 else queue[0]
        expected = chunk["offset"] - len(chunk["data"])
        assert int(request.query["offset"]) == expected
        return 200, chunk

    return respond


def test_logs_splits_stdout_and_stderr(api: FakeApi) -> None:
    api.respond(
        "GET",
        f"{JOB7}/logs",
        logs_of(
            {
                "stdout": [
                    {"data": "one\n", "offset": 4, "eof": False},
                    {"data": "two\n", "offset": 8, "eof": True},
                ],
                "stderr": [{"data": "oops\n", "offset": 5, "eof": True}],
            }
        ),
    )
    result = run(["logs", "7", "--task", "1"])
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("one\ntwo\n", "oops\n")
    assert {r.query["task"] for r in api.requests} == {"1"}


def test_logs_without_follow_stops_when_nothing_more_is_there(
    api: FakeApi, clock: FakeClock
) -> None:
    api.respond(
        "GET",
        f"{JOB7}/logs",
        logs_of(
            {
                "stdout": [
                    {"data": "so far\n", "offset": 7, "eof": False},
                    {"data": "", "offset": 7, "eof": False},
                ],
                "stderr": [{"data": "", "offset": 0, "eof": False}],
            }
        ),
    )
    result = run(["logs", "7"], clock)
    assert (result.exit_code, result.stdout) == (0, "so far\n")
    assert clock.sleeps == []


def test_logs_follow_polls_until_eof(api: FakeApi, clock: FakeClock) -> None:
    api.respond(
        "GET",
        f"{JOB7}/logs",
        logs_of(
            {
                "stdout": [
                    {"data": "a", "offset": 1, "eof": False},
                    {"data": "", "offset": 1, "eof": False},
                    {"data": "", "offset": 1, "eof": False},
                    {"data": "b", "offset": 2, "eof": True},
                ],
                "stderr": [{"data": "", "offset": 0, "eof": True}],
            }
        ),
    )
    result = run(["logs", "7", "-f"], clock)
    assert (result.exit_code, result.stdout) == (0, "ab")
    assert clock.sleeps == [0.5, 0.5]


def test_logs_follow_stops_when_a_job_ended_without_output(api: FakeApi, clock: FakeClock) -> None:
    """A job cancelled before it started has no task, so no end-of-file may ever come."""
    api.on("GET", f"{JOB7}/logs", {"data": "", "offset": 0, "eof": False})
    api.on("GET", JOB7, job(state="cancelled"))
    result = run(["logs", "7", "-f"], clock)
    assert (result.exit_code, result.stdout) == (0, "")
    assert len(clock.sleeps) == 10


def test_wait_rides_out_a_server_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs outlive the server: `wait` keeps waiting while it restarts (same port)."""
    before, after = FakeApi(), FakeApi()
    before.on("GET", JOB7, job(state="running"))
    after.on("GET", JOB7, job(state="succeeded"))
    servers = [serve(before)]
    port = servers[0].server_address[1]
    monkeypatch.setenv("VIRTUAI_URL", before.url)

    class RestartingClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if len(self.sleeps) == 1:  # down after the first answer ...
                stop(servers[0])
            if len(self.sleeps) == 3:  # ... and back two polls later
                servers.append(serve(after, port))

    try:
        result = run(["wait", "7"], RestartingClock())
    finally:
        stop(servers[-1])
    assert (result.exit_code, result.stdout) == (0, ""), result.output
    assert result.stderr == "warning: the server is not answering; still waiting\n"
    assert len(after.requests) == 1


def test_wait_does_not_wait_for_a_server_that_never_answered(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    never = FakeApi()
    stop(serve(never))
    monkeypatch.setenv("VIRTUAI_URL", never.url)
    result = run(["wait", "7"], clock)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the virtuai server")
    assert clock.sleeps == []
