"""The pieces of API worker processes that need no server: how many, and the auth
counter every process of one server shares (server/workers.py, services/tokencache.py)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from virtuai.server.workers import AUTO_MAX, worker_count
from virtuai.services.generations import SharedCounter


def test_auto_is_one_process_on_sqlite_and_one_per_core_up_to_a_cap_elsewhere() -> None:
    assert worker_count("auto", "sqlite", cores=8) == 1
    assert worker_count("auto", "postgresql", cores=2) == 2
    assert worker_count("auto", "postgresql", cores=64) == AUTO_MAX
    assert worker_count(3, "sqlite", cores=1) == 3  # an explicit number is obeyed


def _bump(path: str, times: int) -> None:
    counter = SharedCounter(path)
    for _ in range(times):
        counter.bump()


def test_bumps_from_many_processes_are_never_merged(tmp_path: Path) -> None:
    path = tmp_path / "auth-generation"
    reader = SharedCounter(path)
    assert reader.read() == 0
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_bump, args=(str(path), 200)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    # Seen at once by a process that mapped the file before (no re-read of the file).
    assert reader.read() == 600
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("value", [0, 65, "many"])
def test_a_bad_setting_names_the_field(value: object) -> None:
    from pydantic import ValidationError

    from virtuai.settings import ServerSettings

    with pytest.raises(ValidationError, match="api_workers"):
        ServerSettings(api_workers=value)  # type: ignore[arg-type]
