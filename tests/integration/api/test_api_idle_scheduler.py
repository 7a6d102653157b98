"""An idle scheduling tick does not reread the queue, yet every change is seen at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from support.platform import Platform


@contextmanager
def statements(platform: Platform) -> Iterator[list[str]]:
    engine = platform.sessions.kw["bind"]
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _reads_the_queue(seen: list[str]) -> bool:
    # The full pass loads pending jobs whole (their command among the columns).
    return any("jobs.command" in s and "FROM jobs" in s for s in seen)


def test_an_idle_tick_skips_the_queue_and_changes_wake_it(platform: Platform) -> None:
    platform.tenant("physics", cpu=1, memory="1Gi")
    alice = platform.user("alice", "physics")
    waiting = [platform.submit(alice, ["sleep", "30"], resources={"cpu": 1, "memory": "64Mi"})]
    waiting.append(platform.submit(alice, ["sleep", "30"], resources={"cpu": 1, "memory": "64Mi"}))
    platform.scheduling.tick()  # admits the first
    platform.scheduling.tick()  # the second waits for quota: a full pass that changes nothing
    with statements(platform) as seen:
        platform.scheduling.tick()
    assert not _reads_the_queue(seen)
    assert platform.job(waiting[1]["id"])["state"] == "pending"

    # A quota change is a change: the next tick admits the waiting job.
    platform.ok("PUT", "/api/v1/tenants/physics/quota", json={"cpu": 2, "memory": "1Gi"})
    with statements(platform) as seen:
        report = platform.scheduling.tick()
    assert _reads_the_queue(seen) and report.admitted == 1

    # So is a new submission, and a cancel.
    third = platform.submit(alice, ["sleep", "30"], resources={"cpu": 1, "memory": "64Mi"})
    platform.scheduling.tick()
    assert "quota" in platform.job(third["id"])["reason"]
    platform.ok("POST", f"/api/v1/jobs/{waiting[0]['id']}/cancel")
    platform.wait_for([waiting[0]["id"]])
    platform.wait_for([third["id"]], states={"running", "starting", "admitted"})


def test_a_submit_committed_during_a_pass_is_seen_at_the_next_tick(
    platform: Platform, monkeypatch: Any
) -> None:
    """The digest a pass remembers is the one read before it: a job submitted while the
    pass ran (after it read the queue) is not left for the next full pass, a minute on."""
    platform.tenant("physics", cpu=4, memory="1Gi")
    alice = platform.user("alice", "physics")
    loop = platform.scheduling
    full_pass = loop._full_tick
    late: list[dict[str, Any]] = []

    def pass_then_a_submit(plan: Any) -> Any:
        report = full_pass(plan)
        if not late:  # committed as the pass ends, before the loop reads the digest again
            late.append(platform.submit(alice, ["true"], resources={"cpu": 1, "memory": "64Mi"}))
        return report

    monkeypatch.setattr(loop, "_full_tick", pass_then_a_submit)
    loop.tick()
    assert late and platform.job(late[0]["id"])["state"] == "pending"
    assert loop.tick().admitted == 1
