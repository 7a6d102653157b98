"""The lean entry point (``cli/lean.py``) does exactly what the Typer app does, or hands over.

Every call here runs twice against the same fake server: through the full
Typer app and through the lean path.  Both must send the same requests and
print the same bytes with the same exit status; a call the lean path does not
take must reach the full app with nothing sent.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from cli_fakes import TOKEN, FakeApi, job, run

from virtuai.cli import lean
from virtuai.domain.workload import FINISHED_STATES, JobState

JOBS = "/api/v1/jobs"
Outcome = tuple[int, str, str, list[tuple[str, str, dict[str, str], Any]]]


def _requests(api: FakeApi) -> list[tuple[str, str, dict[str, str], Any]]:
    return [(r.method, r.path, r.query, r.body) for r in api.requests]


def both(
    api: FakeApi, capsys: pytest.CaptureFixture[str], args: list[str], routes: Callable[[], None]
) -> tuple[Outcome, Outcome]:
    routes()
    api.requests.clear()
    full = run(args)
    full_outcome = (full.exit_code, full.stdout, full.stderr, _requests(api))
    routes()
    api.requests.clear()
    capsys.readouterr()
    code = lean.run(args)
    out, err = capsys.readouterr()
    return full_outcome, (code if code is not None else -1, out, err, _requests(api))


def same(
    api: FakeApi, capsys: pytest.CaptureFixture[str], args: list[str], routes: Callable[[], None]
) -> Outcome:
    full, fast = both(api, capsys, args, routes)
    assert fast == full
    return fast


def submitted(api: FakeApi) -> Callable[[], None]:
    return lambda: api.on("POST", JOBS, job(id=42), status=201)


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--", "sleep", "1"],
        ["submit", "true"],
        ["submit", "python", "-c", "x", "--tasks", "3"],  # options end at the command
        ["submit", "--cpu=500m", "--memory", "4Gi", "-t", "1:30:00", "--", "sleep", "1"],
        ["submit", "-t90", "--gpu", "1", "--tasks", "2", "--priority", "high", "--", "x"],
        ["submit", "--env", "A=1", "--env", "B=x=y", "--env", "A=2", "--workdir", "sub", "true"],
        ["submit", "--array", "0-9%2", "-d", "afterok:3", "--signal", "USR1@30", "true"],
        ["submit", "--no-requeue", "--tenant", "ml", "--name", "train", "--json", "--", "t"],
        ["submit", "--vc", "lab", "--", "hostname"],
        ["submit", "--vc", "lab", "--cpu", "2", "--", "hostname"],
    ],
)
def test_submit_is_the_same_on_both_paths(
    api: FakeApi, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, _, requests = same(api, capsys, args, submitted(api))
    assert code == 0 and out and len(requests) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--cpu", "lots", "--", "true"],
        ["submit", "--tasks", "0", "--", "true"],
        ["submit", "--gpu", "٣", "--", "true"],
        ["submit", "--env", "1A=x", "--", "true"],
        ["submit", "--array", "9-0", "--", "true"],
        ["submit", "--name", "Not A Name", "--", "true"],
        ["submit", "--frobnicate", "--", "true"],
        ["submit", "--help"],
        ["submit"],
        ["jobs"],  # a table: Rich draws it
        ["job", "7"],
        ["job", "12_3", "--json"],
        ["cancel", "x1"],
        ["logs", "7", "--task", "-1"],
        ["wait", "7", "--timeout", "soon"],
        ["vc", "list"],
        [],
    ],
)
def test_what_the_lean_path_does_not_take_goes_to_the_full_app_unsent(
    api: FakeApi, args: list[str]
) -> None:
    submitted(api)()
    with pytest.raises(lean.Fallback):
        lean.run(args)
    assert api.requests == []


def test_server_refusals_are_printed_in_the_same_words(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = {"code": "invalid", "message": "needs 9 CPUs", "field": "resources"}
    code, out, err, _ = same(
        api, capsys, ["submit", "--", "true"], lambda: api.on("POST", JOBS, (422, refusal))
    )
    assert (code, out) == (1, "") and err == "error: needs 9 CPUs (field: resources)\n"
    detail = {"detail": [{"loc": ["body", "tasks"], "msg": "too many"}]}
    same(api, capsys, ["submit", "--", "true"], lambda: api.on("POST", JOBS, (422, detail)))
    same(api, capsys, ["submit", "--", "true"], lambda: api.on("POST", JOBS, (500, "oops")))


def test_a_missing_token_is_explained_the_same_way(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIRTUAI_TOKEN")
    unauthorised = {"code": "unauthenticated", "message": "missing credentials", "field": None}
    code, _, err, _ = same(
        api, capsys, ["submit", "--", "true"], lambda: api.on("POST", JOBS, (401, unauthorised))
    )
    assert code == 1 and "set VIRTUAI_TOKEN" in err


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_no_server_is_the_same_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAI_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("VIRTUAI_TOKEN", TOKEN)
    full = run(["submit", "--", "true"])
    assert lean.run(["submit", "--", "true"]) == 1
    _, err = capsys.readouterr()
    assert (full.exit_code, full.stderr) == (1, err)
    assert "cannot reach the virtuai server" in err


def test_both_paths_try_the_next_server_when_one_does_not_answer(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAI_URL", f"http://127.0.0.1:{_closed_port()},{api.url}")
    code, out, err, requests = same(api, capsys, ["submit", "--", "true"], submitted(api))
    assert (code, out, err, len(requests)) == (0, "42\n", "", 1)


def test_the_config_file_may_list_several_servers(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("VIRTUAI_URL")
    monkeypatch.delenv("VIRTUAI_TOKEN")
    config = tmp_path / "config" / "virtuai" / "cli.yaml"
    config.parent.mkdir(parents=True)
    dead = f"http://127.0.0.1:{_closed_port()}"
    config.write_text(f"url: {dead},{api.url}\ntoken: {TOKEN}\n")
    same(api, capsys, ["submit", "--", "true"], submitted(api))
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    config.write_text(f"url:\n- {dead}\n- {api.url}\ntoken: {TOKEN}\n")  # a YAML list
    with pytest.raises(lean.Fallback):  # YAML beyond `key: value` lines is the full app's
        lean.run(["submit", "--", "true"])
    result = run(["submit", "--", "true"])
    assert (result.exit_code, result.stdout) == (0, "42\n")


def test_listing_showing_cancelling_waiting_and_logs_are_the_same(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def routes() -> None:
        api.on("GET", JOBS, [job(id=9, name="ünï"), job(id=8)])
        api.on("GET", f"{JOBS}/7", job(state="succeeded", exit_code=0))
        api.on("GET", f"{JOBS}/8", job(id=8, state="failed", exit_code=3, reason="exited 3"))
        api.on("GET", f"{JOBS}/12", job(id=12, array_id=12, array_index=0))
        api.on("POST", f"{JOBS}/7/cancel", job(state="running"))
        api.on("POST", f"{JOBS}/8/cancel", job(id=8, state="cancelled", reason="by request"))
        api.on("POST", "/api/v1/arrays/12/cancel", [job(id=12), job(id=13)])
        api.respond(
            "GET",
            f"{JOBS}/7/logs",
            lambda r: (
                200,
                {
                    "data": f"{r.query['stream']} \x1b[1mbold\x1b[0m\n"
                    if r.query["offset"] == "0"
                    else "",
                    "offset": 20,
                    "eof": r.query["offset"] != "0",
                },
            ),
        )

    for args in (
        ["jobs", "--json"],
        ["jobs", "--state", "running", "--limit", "5", "--tenant", "ml", "--json"],
        ["job", "7", "--json"],
        ["cancel", "7"],
        ["cancel", "8"],
        ["cancel", "8", "--json"],
        ["cancel", "12"],
        ["wait", "7"],
        ["wait", "8", "--timeout", "5"],
        ["logs", "7"],
        ["logs", "7", "--task", "1", "-f"],
    ):
        same(api, capsys, args, routes)


def test_the_lean_paths_states_are_the_domains() -> None:
    assert {s.value for s in JobState} == lean.STATES
    assert {s.value for s in FINISHED_STATES} == lean.FINISHED


class Execed(Exception):
    pass


@pytest.mark.parametrize(
    "args",
    [
        ["up"],
        ["up", "--port", "9000", "--host=0.0.0.0"],
        ["up", "--home", "state/", "--database-url", "postgresql://db/v"],
    ],
)
def test_up_execs_the_same_server_command(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    calls: list[list[str]] = []

    def execv(_path: str, argv: list[str]) -> None:
        calls.append(list(argv))
        raise Execed

    monkeypatch.setattr("os.execv", execv)
    full = run(args)
    assert isinstance(full.exception, Execed)
    with pytest.raises(Execed):
        lean.run(args)
    assert calls[0] == calls[1]


@pytest.mark.parametrize("args", [["up", "--port", "70000"], ["up", "--help"], ["up", "x"]])
def test_up_leaves_odd_calls_to_the_full_app(args: list[str]) -> None:
    with pytest.raises(lean.Fallback):
        lean.run(args)


def test_a_server_that_takes_no_connection_in_time_is_skipped_on_both_paths(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener whose queue is full drops the SYN: the connection times out, nothing is
    sent, and both clients go on to the next server (httpx's ConnectTimeout)."""
    from virtuai.cli import leanapi
    from virtuai.cli.client import Client
    from virtuai.cli.config import load_connection

    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        waiting = [socket.socket() for _ in range(3)]
        for sock in waiting:
            sock.setblocking(False)
            sock.connect_ex(full.getsockname())
        monkeypatch.setenv("VIRTUAI_URL", f"http://127.0.0.1:{full.getsockname()[1]},{api.url}")
        monkeypatch.setattr(leanapi, "TIMEOUT_S", 0.3)
        submitted(api)()
        assert lean.run(["submit", "--", "true"]) == 0
        assert capsys.readouterr() == ("42\n", "")
        with Client(load_connection(), timeout=0.3) as client:
            assert client.post_object(JOBS, {"command": ["true"]})["id"] == 42
        assert len(api.requests) == 2
        for sock in waiting:
            sock.close()
