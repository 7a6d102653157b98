"""`virtuai notebook start` while the tenant's default environment is being built."""

from __future__ import annotations

import pytest
from cli_fakes import FakeApi, run

from virtuai.cli import notebooks

BUILDING = {
    "code": "conflict",
    "message": "environment notebook of tenant physics is being built; start the notebook "
    "when it is ready",
    "field": "environment",
}
STARTED = {"id": 3, "name": "lab", "state": "pending", "url": "http://s/user/alice/lab/"}


def test_start_waits_for_the_build_then_starts_saying_so(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notebooks, "POLL_S", 0.01)
    api.on("POST", "/api/v1/notebooks", (409, BUILDING), (201, STARTED))
    api.on("GET", "/api/v1/environments/notebook", {"state": "building"}, {"state": "ready"})
    result = run(["notebook", "start"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "notebook lab (job 3): pending\n  http://s/user/alice/lab/\n"
    first, *_, last = result.stderr.splitlines()
    assert "building the environment notebook first" in first
    assert "start the notebook when it is ready" not in result.stderr  # the CLI does it
    assert last.strip(".") == ""  # the progress dots end their line
