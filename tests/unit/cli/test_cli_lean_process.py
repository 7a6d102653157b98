"""The ``virtuai`` command as a user runs it: a process of the lean entry point beside a
process of the full Typer app, against the same fake server.

``test_cli_lean.py`` compares the two paths in-process; here each is a real
process (the console script's own exit, the config file, the environment), and
the lean one must keep out of its imports what it exists to avoid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fakes import TOKEN, FakeApi, job
from test_cli_lean import _closed_port

JOBS = "/api/v1/jobs"
LEAN = [sys.executable, "-m", "virtuai"]
FULL = [sys.executable, "-c", "from virtuai.cli.main import main; main()"]
Outcome = tuple[int, str, str]


def outcome(command: list[str], args: list[str]) -> Outcome:
    done = subprocess.run(
        [*command, *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def same(api: FakeApi, args: list[str]) -> Outcome:
    full = outcome(FULL, args)
    sent_by_full = [(r.method, r.path, r.body) for r in api.requests]
    api.requests.clear()
    lean = outcome(LEAN, args)
    assert lean == full
    assert [(r.method, r.path, r.body) for r in api.requests] == sent_by_full
    return lean


def test_a_submit_prints_the_same_id(api: FakeApi) -> None:
    api.on("POST", JOBS, job(id=42), status=201)
    assert same(api, ["submit", "--cpu", "0.5", "-d", "afterok:3", "--", "sleep", "1"]) == (
        0,
        "42\n",
        "",
    )


def test_a_refused_value_is_the_same_error_naming_the_field(api: FakeApi) -> None:
    refusal = {"code": "invalid", "message": "memory: at most 64Gi", "field": "memory"}
    api.on("POST", JOBS, (422, refusal))
    assert same(api, ["submit", "--memory", "900Gi", "--", "true"]) == (
        1,
        "",
        "error: memory: at most 64Gi\n",
    )
    api.requests.clear()
    code, out, err = same(api, ["submit", "--cpu", "lots", "--", "true"])  # a usage error
    assert (code, out) == (2, "") and "--cpu" in err and api.requests == []


def test_the_next_server_answers_when_the_first_does_not(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUAI_URL", f"http://127.0.0.1:{_closed_port()},{api.url}")
    api.on("POST", JOBS, job(id=5), status=201)
    assert same(api, ["submit", "--", "true"]) == (0, "5\n", "")


def test_a_missing_token_is_the_same_hint(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VIRTUAI_TOKEN")
    monkeypatch.setenv("XDG_CONFIG_HOME", f"{tmp_path}/odd//./config")
    unauthorised = {"code": "unauthenticated", "message": "missing credentials", "field": None}
    api.on("POST", JOBS, (401, unauthorised))
    code, out, err = same(api, ["submit", "--", "true"])
    assert (code, out) == (1, "")
    assert "set VIRTUAI_TOKEN" in err and "odd/config/virtuai/cli.yaml" in err


def test_the_token_of_the_config_file_is_sent(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from virtuai.clientconfig import write_cli_config

    monkeypatch.delenv("VIRTUAI_URL")
    monkeypatch.delenv("VIRTUAI_TOKEN")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    write_cli_config(api.url, TOKEN, tmp_path / "virtuai" / "cli.yaml")
    api.on("GET", JOBS, [job(id=3)])
    same(api, ["jobs", "--json"])
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


# What the lean path exists to avoid: each costs ms of CPU at every call.
HEAVY = {"re", "json", "socket", "enum", "typing", "pathlib", "urllib", "encodings.idna"}
HEAVY |= {"typer", "click", "rich", "httpx", "yaml", "pydantic", "ssl", "http", "email"}
HEAVY |= {"dataclasses", "decimal", "virtuai.domain", "virtuai.errors", "collections"}
IMPORTS = """
import sys
from virtuai.cli import lean
code = lean.run(sys.argv[1:])
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--cpu", "0.1", "--memory", "16Mi", "-d", "afterok:1", "--", "true"],
        ["submit", "--array", "0-99%4", "--tenant", "ml", "-t", "1:00:00", "--", "true"],
        ["jobs", "--json", "--limit", "20"],
        ["cancel", "7"],
    ],
)
def test_the_common_calls_import_nothing_heavy(api: FakeApi, args: list[str]) -> None:
    api.on("POST", JOBS, job(id=42), status=201)
    api.on("GET", JOBS, [job(id=3)])
    api.on("GET", f"{JOBS}/7", job())
    api.on("POST", f"{JOBS}/7/cancel", job())
    code, _, err = outcome([sys.executable, "-c", IMPORTS], args)
    assert code == 0, err
    modules = set(err.split())
    assert modules & HEAVY == set()
    assert {"virtuai.cli.lean", "_socket"} <= modules
