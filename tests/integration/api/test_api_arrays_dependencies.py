"""Arrays and dependency chains, run for real through the loops and the local driver."""

from __future__ import annotations

import pytest

from support.platform import Platform


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi")
    return platform.user("alice", "physics")


def test_an_array_runs_every_index_with_its_throttle(platform: Platform, alice: str) -> None:
    script = 'echo "$VIRTUAI_ARRAY_INDEX $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID"; sleep 0.3'
    first = platform.submit(alice, ["sh", "-c", script], array="0-5%2")
    array_id = first["id"]
    assert (first["array_id"], first["array_index"]) == (array_id, 0)
    elements = platform.ok("GET", "/api/v1/jobs", alice, params={"array_id": array_id})
    assert sorted(e["array_index"] for e in elements) == [0, 1, 2, 3, 4, 5]

    platform.tick()
    states = [e["state"] for e in platform.ok("GET", "/api/v1/jobs", params={"array_id": array_id})]
    assert len([s for s in states if s != "pending"]) == 2  # %2: two at a time
    waiting = [
        e
        for e in platform.ok("GET", "/api/v1/jobs", params={"array_id": array_id})
        if e["state"] == "pending"
    ]
    assert waiting[0]["reason"].startswith("waiting for array limit: at most 2 elements")

    done = platform.wait_for([e["id"] for e in elements], timeout=60)
    for element in done.values():
        assert element["state"] == "succeeded"
        index = element["array_index"]
        assert platform.logs(element["id"]).split() == [str(index), str(index), str(array_id)]


def test_an_array_is_cancelled_whole_or_one_by_one(platform: Platform, alice: str) -> None:
    first = platform.submit(alice, ["sleep", "30"], array="1,3,5-6")
    elements = platform.ok("GET", "/api/v1/jobs", alice, params={"array_id": first["id"]})
    one = next(e for e in elements if e["array_index"] == 3)
    assert platform.ok("POST", f"/api/v1/jobs/{one['id']}/cancel", alice)["state"] == "cancelled"
    cancelled = platform.ok("POST", f"/api/v1/arrays/{first['id']}/cancel", alice)
    assert len(cancelled) == 4
    done = platform.wait_for([e["id"] for e in elements])
    assert {j["state"] for j in done.values()} == {"cancelled"}
    not_an_array = platform.submit(alice, ["true"])
    response = platform.call("POST", f"/api/v1/arrays/{not_an_array['id']}/cancel", alice)
    assert response.status_code == 404


def test_a_dependency_chain_runs_in_order(platform: Platform, alice: str) -> None:
    step = 'echo "{name} $(date +%s.%N)" >> chain.log; sleep 0.2'
    first = platform.submit(alice, ["sh", "-c", step.format(name="first")])
    second = platform.submit(
        alice, ["sh", "-c", step.format(name="second")], dependency=f"afterok:{first['id']}"
    )
    third = platform.submit(
        alice, ["sh", "-c", step.format(name="third")], dependency=f"afterany:{second['id']}"
    )
    platform.tick()
    assert platform.job(third["id"])["reason"] == (
        f"waiting for dependency: job {second['id']} (afterany)"
    )
    done = platform.wait_for([first["id"], second["id"], third["id"]])
    assert {j["state"] for j in done.values()} == {"succeeded"}
    log = (platform.state_dir / "workspaces" / "physics" / "chain.log").read_text().split("\n")
    assert [line.split()[0] for line in log if line] == ["first", "second", "third"]
    assert done[second["id"]]["dependency"] == f"afterok:{first['id']}"


def test_a_dependency_that_can_never_be_met_cancels_the_job(platform: Platform, alice: str) -> None:
    failing = platform.submit(alice, ["false"])
    after_ok = platform.submit(alice, ["true"], dependency=f"afterok:{failing['id']}")
    after_not_ok = platform.submit(alice, ["true"], dependency=f"afternotok:{failing['id']}")
    done = platform.wait_for([failing["id"], after_ok["id"], after_not_ok["id"]])
    assert done[after_ok["id"]]["state"] == "cancelled"
    assert done[after_ok["id"]]["reason"] == (
        f"dependency never satisfied: job {failing['id']} did not succeed (afterok)"
    )
    assert done[after_not_ok["id"]]["state"] == "succeeded"


def test_dependencies_on_unknown_or_foreign_jobs_are_refused(
    platform: Platform, alice: str
) -> None:
    platform.tenant("biology")
    bob = platform.user("bob", "biology")
    foreign = platform.submit(bob, ["true"])
    for dependency in ("afterok:999999", f"afterok:{foreign['id']}"):
        response = platform.call(
            "POST", "/api/v1/jobs", alice, json={"command": ["true"], "dependency": dependency}
        )
        assert response.status_code == 404, response.text
        assert response.json()["field"] == "dependency"
    bad = platform.call(
        "POST", "/api/v1/jobs", alice, json={"command": ["true"], "dependency": "afterwards:1"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "dependency"
    bad = platform.call("POST", "/api/v1/jobs", alice, json={"command": ["true"], "array": "5-1"})
    assert bad.status_code == 422 and bad.json()["field"] == "array"


WAIT_FOR_RELEASE = "while [ ! -f release-$0 ]; do sleep 0.05; done"


def test_after_singleton_and_any_of_run_when_slurm_would(platform: Platform, alice: str) -> None:
    workspace = platform.state_dir / "workspaces" / "physics"
    holder = platform.submit(alice, ["sh", "-c", WAIT_FOR_RELEASE, "a"], name="nightly")
    # after: may start as soon as the holder started, while it still runs.
    after = platform.submit(alice, ["true"], dependency=f"after:{holder['id']}")
    # singleton: one running job named "nightly" per user, in submission order.
    single = platform.submit(
        alice, ["sh", "-c", WAIT_FOR_RELEASE, "b"], name="nightly", dependency="singleton"
    )
    failing = platform.submit(alice, ["false"])
    # any of: the first term can never be met, the second is.
    either = platform.submit(
        alice, ["true"], dependency=f"afterok:{failing['id']}?afterany:{failing['id']}"
    )
    later = platform.submit(alice, ["true"], dependency=f"after:{holder['id']}+60")
    done = platform.wait_for([after["id"], either["id"]])
    assert done[after["id"]]["state"] == "succeeded"
    assert done[either["id"]]["state"] == "succeeded"
    assert done[either["id"]]["dependency"] == (f"afterok:{failing['id']}?afterany:{failing['id']}")
    assert platform.job(holder["id"])["state"] == "running"
    assert platform.job(single["id"])["reason"] == (
        f"waiting for dependency: job {holder['id']} (singleton)"
    )
    assert platform.job(later["id"])["reason"] == (
        f"waiting for dependency: job {holder['id']} (after) +60 min"
    )
    (workspace / "release-a").touch()
    platform.wait_for([holder["id"]])
    platform.wait_for([single["id"]], states={"running"})
    (workspace / "release-b").touch()
    assert platform.wait_for([single["id"]])[single["id"]]["state"] == "succeeded"
    platform.ok("POST", f"/api/v1/jobs/{later['id']}/cancel", alice)


def test_aftercorr_and_a_dependency_on_one_element(platform: Platform, alice: str) -> None:
    # Element 1 of the first array fails; the others succeed after a moment.
    first = platform.submit(
        alice, ["sh", "-c", 'sleep 0.5; [ "$VIRTUAI_ARRAY_INDEX" != 1 ]'], array="0-2"
    )
    array_id = first["id"]
    corr = platform.submit(alice, ["true"], array="0-3", dependency=f"aftercorr:{array_id}")
    on_two = platform.submit(alice, ["true"], dependency=f"afterok:{array_id}_2")
    on_one = platform.submit(alice, ["true"], dependency=f"afterok:{array_id}_1")
    assert platform.job(on_two["id"], alice)["dependency"] == f"afterok:{array_id}_2"
    platform.tick()
    waiting = platform.job(on_two["id"], alice)
    assert waiting["state"] == "pending"
    assert waiting["reason"] == f"waiting for dependency: job {array_id}_2 (afterok)"
    elements = platform.ok("GET", "/api/v1/jobs", alice, params={"array_id": corr["id"]})
    ids = [*(e["id"] for e in elements), on_two["id"], on_one["id"]]
    done = platform.wait_for(ids, timeout=60)
    by_index = {done[e["id"]]["array_index"]: done[e["id"]] for e in elements}
    assert by_index[0]["state"] == "succeeded" and by_index[2]["state"] == "succeeded"
    assert by_index[1]["state"] == "cancelled"
    assert f"job {array_id}_1 did not succeed (aftercorr)" in by_index[1]["reason"]
    assert by_index[3]["state"] == "succeeded"  # the first array has no element 3
    assert done[on_two["id"]]["state"] == "succeeded"
    assert done[on_one["id"]]["state"] == "cancelled"
    missing = platform.call(
        "POST",
        "/api/v1/jobs",
        alice,
        json={"command": ["true"], "dependency": f"aftercorr:{array_id}_1"},
    )
    assert missing.status_code == 422 and "aftercorr names a whole array" in missing.text
