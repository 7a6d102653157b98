"""``proxy.engine: auto`` (``server.start.resolve_engine``, ``proxy.nginxfind``): nginx when
its binary and Lua module are there, else the builtin proxy with a line saying why."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from virtuai.proxy.nginxfind import MODULES, missing
from virtuai.server.start import resolve_engine
from virtuai.settings import ProxySettings, Settings

Engine = Literal["auto", "builtin", "nginx"]


def _settings(engine: Engine, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, proxy=ProxySettings(engine=engine))


def test_auto_is_the_default() -> None:
    assert ProxySettings().engine == "auto"


def test_auto_takes_nginx_when_it_can_run(tmp_path: Path) -> None:
    assert resolve_engine(_settings("auto", tmp_path), None).proxy.engine == "nginx"


def test_auto_falls_back_to_the_builtin_proxy_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    why = "nginx is not installed (Debian: apt-get install nginx-light)"
    with caplog.at_level(logging.INFO, logger="virtuai"):
        resolved = resolve_engine(_settings("auto", tmp_path), why)
    assert resolved.proxy.engine == "builtin"
    assert why in caplog.text


@pytest.mark.parametrize("engine", ["builtin", "nginx"])
def test_an_explicit_engine_is_kept(engine: Engine, tmp_path: Path) -> None:
    assert resolve_engine(_settings(engine, tmp_path), None).proxy.engine == engine
    assert resolve_engine(_settings(engine, tmp_path), "no nginx").proxy.engine == engine


def test_missing_names_what_to_install(tmp_path: Path) -> None:
    binary = tmp_path / "nginx"
    binary.write_text("#!/bin/sh\n")
    modules = tmp_path / "modules"
    modules.mkdir()
    assert "nginx-light" in (missing([str(tmp_path / "none")], [modules]) or "")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert "libnginx-mod-http-lua" in (missing([str(binary)], [modules]) or "")
    (modules / MODULES[0]).write_text("")  # the development kit alone is not enough
    assert "libnginx-mod-http-lua" in (missing([str(binary)], [tmp_path, modules]) or "")
    for name in MODULES:
        (modules / name).write_text("")
    assert missing([str(binary)], [tmp_path, modules]) is None


def test_auto_keeps_the_builtin_proxy_when_api_workers_are_asked_for(tmp_path: Path) -> None:
    settings = _settings("auto", tmp_path)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"api_workers": 2})}
    )
    # nginx in front asks the main process alone: the workers would serve nothing.
    assert resolve_engine(settings, None).proxy.engine == "builtin"
    assert resolve_engine(_settings("auto", tmp_path), None).proxy.engine == "nginx"


def test_the_nginx_engine_starts_without_the_proxys_heavy_half() -> None:
    # ``virtuai up`` imports the engine before /healthz answers (server/start.py): the
    # proxy's heavy half (its peers, the API, the control loops) must wait for the build
    # thread, or a restart takes 0.8 s instead of 0.3 s before /healthz answers.
    code = (
        "import sys, virtuai.server.start, virtuai.proxy.nginx; "
        "print(sorted(m for m in ('virtuai.proxy.peers', 'virtuai.api.browser', "
        "'virtuai.control.notebooks', 'fastapi') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert loaded.strip() == "[]"
