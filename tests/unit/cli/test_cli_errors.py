"""Every failure ends as one clear line on stderr and a meaningful exit status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fakes import FakeApi, Raw, run

import virtuai


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_error_is_one_line_with_the_field(api: FakeApi) -> None:
    error = {"code": "not_found", "message": "no tenant 'nope'", "field": "tenant"}
    api.on("GET", "/api/v1/tenants/nope", (404, error))
    result = run(["tenant", "show", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "error: no tenant 'nope' (field: tenant)\n"
    assert result.stdout == ""


def test_api_error_without_a_field(api: FakeApi) -> None:
    api.on("GET", "/api/v1/nodes", (403, {"code": "forbidden", "message": "admins only"}))
    result = run(["nodes"])
    assert (result.exit_code, result.stderr) == (1, "error: admins only\n")


def test_a_multi_line_message_stays_on_one_line(api: FakeApi) -> None:
    api.on("GET", "/api/v1/nodes", Raw(500, "oops"))
    result = run(["nodes"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: the server answered 500")


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("VIRTUAI_URL", url)
    result = run(["jobs"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot reach the virtuai server at {url}: is `virtuai up` running?\n"
    )


def test_a_broken_config_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "xdg" / "virtuai" / "cli.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("url: [broken\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = run(["whoami"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {config} is not valid YAML")
    assert result.stderr.count("\n") == 1


def test_usage_errors_exit_2() -> None:
    assert run(["jobs", "--limit", "zero"]).exit_code == 2
    assert run(["no-such-command"]).exit_code == 2


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """The real entry point, in a real process: one line, exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    src = Path(virtuai.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "VIRTUAI_URL": url,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    env.pop("VIRTUAI_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-c", "from virtuai.cli.main import main; main()", "jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"error: cannot reach the virtuai server at {url}: is `virtuai up` running?\n"
    )


def test_version() -> None:
    result = run(["--version"])
    assert (result.exit_code, result.stdout) == (0, f"virtuai {virtuai.__version__}\n")
