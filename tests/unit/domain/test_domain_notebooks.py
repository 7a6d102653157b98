from __future__ import annotations

import pytest

from virtuai.domain.notebooks import (
    AUTH_HEADER,
    LAUNCHER,
    SECRET_ENV,
    SECRET_HEADER,
    base_path,
    culled_reason,
    format_duration,
    launch_command,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600, "1h"), (5400, "1h30m"), (90, "1m30s"), (2, "2s"), (0, "0s"), (86400 + 60, "1d1m")],
)
def test_durations_read_as_people_write_them(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_culled_reason_names_the_timeout() -> None:
    assert culled_reason(3600) == "culled after 1h idle"


def test_the_launcher_is_filled_in_and_compiles() -> None:
    assert "@" not in LAUNCHER.replace("@property", "")
    for name in (SECRET_ENV, SECRET_HEADER, AUTH_HEADER):
        assert name in LAUNCHER
    compile(LAUNCHER, "<launcher>", "exec")
    command = launch_command("/env/bin/python", "alice", "lab", "/ws/physics/home/alice")
    assert command[0] == "/env/bin/python"
    assert command[3:] == (base_path("alice", "lab"), "alice", "/ws/physics/home/alice")
    assert base_path("alice", "lab") == "/user/alice/lab/"
