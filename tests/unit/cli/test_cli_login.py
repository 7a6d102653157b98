"""`virtuai login`: the token is checked with the server before the config file is written."""

from __future__ import annotations

import stat

import pytest
import yaml
from cli_fakes import FakeApi, run

from virtuai.clientconfig import cli_config_path

ME = {"name": "alice", "is_admin": False, "tenants": [{"tenant": "physics", "role": "member"}]}


@pytest.fixture
def server(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """The fake server, with nothing configured yet (a user's fresh machine)."""
    monkeypatch.delenv("VIRTUAI_URL")
    monkeypatch.delenv("VIRTUAI_TOKEN")
    return api


def test_login_checks_the_token_then_saves_it_0600(server: FakeApi) -> None:
    server.on("GET", "/api/v1/whoami", ME)
    result = run(["login", server.url + "/", "--token-stdin"], stdin="vai_alice\n")
    assert result.exit_code == 0, result.output
    assert "as alice (tenants: physics (member))" in result.stdout
    assert server.requests[0].headers["authorization"] == "Bearer vai_alice"
    path = cli_config_path()
    assert yaml.safe_load(path.read_text()) == {"url": server.url, "token": "vai_alice"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Every later command uses it.
    assert run(["whoami"]).exit_code == 0
    assert server.requests[-1].headers["authorization"] == "Bearer vai_alice"


def test_a_refused_token_is_said_and_nothing_is_written(server: FakeApi) -> None:
    refusal = {"code": "unauthenticated", "message": "invalid token", "field": None}
    server.on("GET", "/api/v1/whoami", (401, refusal))
    result = run(["login", server.url, "--token-stdin"], stdin="vai_wrong\n")
    assert result.exit_code != 0
    assert "invalid token" in result.stderr and "Traceback" not in result.output
    assert not cli_config_path().exists()


def test_no_token_and_a_bad_url_are_refused_naming_them(server: FakeApi) -> None:
    empty = run(["login", server.url, "--token-stdin"], stdin="\n")
    assert empty.exit_code == 2 and "no token given" in empty.stderr
    bad = run(["login", "virtuai.example.org:8642", "--token-stdin"], stdin="vai_x\n")
    assert bad.exit_code != 0 and "http://" in bad.stderr
    assert server.requests == [] and not cli_config_path().exists()
