"""Listing jobs a page at a time: newest first, keyset cursor, only the caller's tenants."""

from __future__ import annotations

from support.platform import Platform

JOBS = "/api/v1/jobs"


def test_pages_walk_every_job_once_newest_first(platform: Platform) -> None:
    platform.tenant("physics", cpu=2, memory="2Gi")
    platform.tenant("chemistry", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "chemistry")
    mine = [platform.submit(alice, ["true"])["id"] for _ in range(5)]
    theirs = [platform.submit(bob, ["true"])["id"] for _ in range(2)]

    seen: list[int] = []
    before: str | None = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if before is not None:
            params["before_id"] = before
        response = platform.call("GET", JOBS, alice, params=params)
        assert response.status_code == 200
        page = [j["id"] for j in response.json()]
        seen += page
        before = response.headers.get("X-Next-Before-Id")
        if before is None:
            break
        assert int(before) == page[-1]
    assert seen == sorted(mine, reverse=True)

    everything = platform.ok("GET", JOBS, params={"limit": 3})  # the administrator
    assert [j["id"] for j in everything] == sorted(mine + theirs, reverse=True)[:3]
    assert all(j["tenant"] and j["user"] for j in everything)


def test_the_default_page_is_bounded_and_bad_pages_are_refused(platform: Platform) -> None:
    too_big = platform.call("GET", JOBS, params={"limit": 10_001})
    assert too_big.status_code == 422 and too_big.json()["field"] == "limit"
    bad_cursor = platform.call("GET", JOBS, params={"before_id": 0})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["field"] == "before_id"
    assert platform.call("GET", JOBS).headers.get("X-Next-Before-Id") is None


def test_a_listed_job_reads_as_the_job_itself(platform: Platform) -> None:
    # The page is built from a query of its own columns (services.jobs.LISTED_COLUMNS),
    # the job's view from its row: every field a page shows must agree, in every state.
    platform.tenant("physics", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    done = platform.submit(alice, ["true"], name="first")
    platform.wait_for([done["id"]])
    platform.ok(
        "POST",
        JOBS,
        alice,
        json={
            "command": ["sleep", "60"],
            "name": "sweep",
            "array": "0-1",
            "dependency": f"afterok:{done['id']}",
            "env": {"SECRET": "not in a page"},
            "resources": {"cpu": 0.5, "memory": "32Mi"},
            "time": "10m",
            "constraints": [],
        },
    )
    page = platform.ok("GET", JOBS, alice)
    assert len(page) == 3
    for listed in page:
        whole = platform.ok("GET", f"{JOBS}/{listed['id']}", alice)
        assert "env" not in listed
        assert listed == {k: v for k, v in whole.items() if k in listed}, listed["id"]
        assert set(whole) - set(listed) == {"env", "workdir", "events", "task_runs"}
    assert {j["user"] for j in page} == {"alice"} and {j["tenant"] for j in page} == {"physics"}
    for listed in platform.ok(
        "POST", f"{JOBS}/bulk", alice, json={"jobs": [{"command": ["true"]}]}
    ):
        assert listed == platform.ok("GET", JOBS, alice, params={"limit": 1})[0]
