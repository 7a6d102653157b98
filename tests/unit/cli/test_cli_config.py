"""Where the URL and token come from, and the config file the server writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from virtuai.cli.config import load_connection
from virtuai.clientconfig import (
    DEFAULT_URL,
    CliConfig,
    cli_config_path,
    read_cli_config,
    write_cli_config,
)
from virtuai.errors import ConfigurationError


def test_config_path_follows_xdg_config_home(tmp_path: Path) -> None:
    assert cli_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "virtuai/cli.yaml"


def test_config_path_ignores_a_relative_xdg_config_home() -> None:
    expected = Path.home() / ".config/virtuai/cli.yaml"
    assert cli_config_path({"XDG_CONFIG_HOME": "relative/dir"}) == expected
    assert cli_config_path({}) == expected


def test_write_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "config" / "virtuai" / "cli.yaml"
    assert write_cli_config("http://127.0.0.1:9000", "vai_secret", path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_cli_config(path) == CliConfig(url="http://127.0.0.1:9000", token="vai_secret")
    assert os.listdir(path.parent) == ["cli.yaml"]  # no temporary file left behind


def test_write_replaces_an_existing_file_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "cli.yaml"
    path.write_text("url: http://old\n")
    path.chmod(0o644)
    write_cli_config("http://new:1", "t2", path)
    assert read_cli_config(path) == CliConfig(url="http://new:1", token="t2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_defaults_to_the_xdg_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert write_cli_config("http://h:1", "t") == tmp_path / "virtuai" / "cli.yaml"


def test_a_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    assert read_cli_config(tmp_path / "absent.yaml") == CliConfig()


@pytest.mark.parametrize("text", ["url: [unclosed\n", "- a list\n", "url: 3\n"])
def test_a_broken_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cli.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=str(path)):
        read_cli_config(path)


def test_nothing_configured_means_the_default_url_and_no_token(tmp_path: Path) -> None:
    connection = load_connection({}, tmp_path / "absent.yaml")
    assert (connection.url, connection.token) == (DEFAULT_URL, None)


def test_the_file_is_used_when_the_environment_says_nothing(tmp_path: Path) -> None:
    path = write_cli_config("http://127.0.0.1:9000/", "file-token", tmp_path / "cli.yaml")
    connection = load_connection({}, path)
    assert (connection.url, connection.token) == ("http://127.0.0.1:9000", "file-token")
    assert connection.token_source == str(path)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_cli_config("http://127.0.0.1:9000", "file-token", tmp_path / "cli.yaml")
    env = {"VIRTUAI_URL": "http://127.0.0.1:9000", "VIRTUAI_TOKEN": "env-token"}
    connection = load_connection(env, path)
    assert (connection.token, connection.token_source) == ("env-token", "VIRTUAI_TOKEN")


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    path = write_cli_config("http://127.0.0.1:9000", "file-token", tmp_path / "cli.yaml")
    connection = load_connection({"VIRTUAI_URL": "", "VIRTUAI_TOKEN": " "}, path)
    assert (connection.url, connection.token) == ("http://127.0.0.1:9000", "file-token")


def test_the_file_token_is_not_sent_to_another_server(tmp_path: Path) -> None:
    path = write_cli_config("http://127.0.0.1:9000", "file-token", tmp_path / "cli.yaml")
    connection = load_connection({"VIRTUAI_URL": "https://elsewhere.example"}, path)
    assert (connection.url, connection.token) == ("https://elsewhere.example", None)


def test_both_variables_set_skip_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "cli.yaml"
    path.write_text("url: [broken\n")
    env = {"VIRTUAI_URL": "http://h:1", "VIRTUAI_TOKEN": "t"}
    assert load_connection(env, path).token == "t"


def test_a_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"VIRTUAI_URL"):
        load_connection({"VIRTUAI_URL": "127.0.0.1:8642"}, tmp_path / "absent.yaml")
