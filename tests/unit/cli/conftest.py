"""Fixtures of the CLI tests: ``api`` (a fake server the CLI points at) and ``clock``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_fakes import TOKEN, FakeApi, FakeClock, serve, stop


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """A fake server; the CLI is pointed at it with VIRTUAI_URL and VIRTUAI_TOKEN."""
    fake = FakeApi()
    server = serve(fake)
    monkeypatch.setenv("VIRTUAI_URL", fake.url)
    monkeypatch.setenv("VIRTUAI_TOKEN", TOKEN)
    try:
        yield fake
    finally:
        stop(server)


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read the developer's own config or environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("VIRTUAI_URL", raising=False)
    monkeypatch.delenv("VIRTUAI_TOKEN", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
