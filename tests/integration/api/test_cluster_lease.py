"""The scheduling lease, fencing, lost nodes, node operations and targeting, in-process on
SQLite and PostgreSQL (the multi-machine end-to-end tests are in tests/e2e/test_e2e_cluster.py).

Liveness is judged by each instance's monotonic clock, so these tests drive a
fake one: a lease or a heartbeat "lapses" when the test says so.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform
from virtuai.control.membership import Membership, MembershipConfig
from virtuai.control.nodewatch import NodeWatch, NodeWatchConfig
from virtuai.control.scheduling import SchedulingLoop
from virtuai.domain.clock import SystemClock
from virtuai.domain.resources import Node, Resources
from virtuai.store.db import transaction
from virtuai.store.inventory import record_inventory
from virtuai.store.lease import NotLeader, read_lease, take_lease
from virtuai.store.models import JobEventRow, NodeRow, TaskRow


class FakeMono:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def member(sessions: sessionmaker[Session], node: str, mono: FakeMono, **config: Any) -> Membership:
    return Membership(
        sessions,
        SystemClock(),
        MembershipConfig(node=node, lease_ttl_s=1.0, **config),
        monotonic=mono,
    )


def add_node(sessions: sessionmaker[Session], name: str, **columns: Any) -> None:
    with transaction(sessions) as session:
        session.add(
            NodeRow(
                name=name,
                site="local",
                pool="default",
                cpu_milli=4000,
                memory=8 * 2**30,
                gpus=[],
                updated_at=SystemClock().now(),
                **columns,
            )
        )


@pytest.fixture
def alice(platform: Platform) -> str:
    platform.tenant("physics", cpu=4, memory="4Gi")
    return platform.user("alice", "physics")


def test_one_instance_leads_and_another_takes_over_only_when_renewals_stop(
    session_factory: sessionmaker[Session],
) -> None:
    mono = FakeMono()
    a, b = member(session_factory, "a", mono), member(session_factory, "b", mono)
    a.step()
    b.step()
    assert a.epoch() == 1 and b.epoch() is None
    for _ in range(3):  # a renews: b never takes over, however long it waits
        mono.now += 0.6
        a.step()
        b.step()
    assert a.is_leader and not b.is_leader
    mono.now += 0.6
    b.step()  # b starts timing a's silence from here
    mono.now += 1.0
    assert a.epoch() is None  # a did not renew for the lease's time: it stops acting first
    b.step()
    assert b.epoch() == 2
    with transaction(session_factory) as session:
        lease = read_lease(session)
        assert lease is not None and lease.holder == b.holder and lease.holder_node == "b"
    a.step()  # a's renewal fails: the epoch moved on
    assert a.epoch() is None and b.epoch() == 2


def test_a_restarted_node_takes_its_own_lease_back_at_once(
    session_factory: sessionmaker[Session],
) -> None:
    mono = FakeMono()
    first = member(session_factory, "a", mono)
    first.step()
    again = member(session_factory, "a", mono)  # the same node after kill -9
    again.step()
    assert again.epoch() == 2


def test_a_paused_leader_cannot_write_after_a_takeover(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    mono = FakeMono()
    old = member(session_factory, "node-1", mono)
    old.step()
    assert old.epoch() == 1
    job = platform.submit(alice, ["true"])
    # Another instance takes over behind the old leader's back (it was paused, say).
    with transaction(session_factory) as session:
        seen = read_lease(session)
        assert seen is not None
        assert take_lease(session, holder="other", node="n2", seen=seen, now=SystemClock().now())
    loop = SchedulingLoop(session_factory, SystemClock(), guard=old.guard)
    with pytest.raises(NotLeader):
        loop.tick()
    assert platform.job(job["id"])["state"] == "pending"  # nothing was written


def test_a_takeover_waits_for_the_leaders_open_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    """The fencing check holds the lease row: a takeover cannot slip in between the
    leader's check and its commit (on SQLite the write lock gives the same order)."""
    mono = FakeMono()
    leader = member(session_factory, "a", mono)
    leader.step()
    inside, release = threading.Event(), threading.Event()

    def leader_transaction() -> None:
        with transaction(session_factory) as session:
            leader.guard(session)
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=leader_transaction)
    thread.start()
    assert inside.wait(5)
    taken: list[int | None] = []

    def takeover() -> None:
        try:
            with transaction(session_factory) as session:
                seen = read_lease(session)
                assert seen is not None
                taken.append(
                    take_lease(session, holder="b", node="b", seen=seen, now=SystemClock().now())
                )
        except Exception:
            taken.append(None)  # a lock timeout: the takeover is retried later

    other = threading.Thread(target=takeover)
    other.start()
    time.sleep(0.3)
    assert taken == []  # blocked behind the leader's transaction
    release.set()
    thread.join(5)
    other.join(35)
    # Afterwards it either took over (then the leader is fenced) or timed out and retries.
    with transaction(session_factory) as session:
        lease = read_lease(session)
        assert lease is not None
    if taken == [2]:
        with pytest.raises(NotLeader), transaction(session_factory) as session:
            leader.guard(session)


def test_a_lost_node_is_unreachable_and_its_jobs_are_requeued_or_failed(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    mono = FakeMono()
    leader = member(session_factory, "node-1", mono)
    leader.step()
    again = platform.submit(alice, ["sleep", "30"], name="again")
    once = platform.submit(alice, ["sleep", "30"], name="once", requeue=False)
    platform.wait_for([again["id"], once["id"]], states={"running"})
    watch = NodeWatch(
        session_factory, SystemClock(), NodeWatchConfig(node_lost_s=5), leader.guard, mono
    )
    watch.tick()
    mono.now += 0.5
    leader.step()  # renews the lease; node-1's heartbeat is bumped too: it is alive
    watch.tick()
    assert platform.ok("GET", "/api/v1/nodes")[0]["state"] == "ready"
    # node-1 stops beating; the lease is renewed without a heartbeat (as by another node).
    for _ in range(12):
        mono.now += 0.5
        leader._lease_step()
        watch.tick()
    node = platform.ok("GET", "/api/v1/nodes")[0]
    assert node["state"] == "unreachable"
    requeued, failed = platform.job(again["id"]), platform.job(once["id"])
    assert requeued["state"] == "pending" and requeued["reason"] == "requeued: node node-1 lost"
    assert requeued["restart_count"] == 1
    assert failed["state"] == "failed" and failed["reason"] == "node node-1 lost"
    assert [r["outcome"] for r in failed["task_runs"]] == ["lost"]
    # The node comes back: its reconciler first kills what belongs to moved attempts.
    deadline = time.monotonic() + 10
    while True:
        platform.lifecycle.reap_orphans()
        with transaction(session_factory) as session:
            left = session.scalars(
                select(TaskRow).where(TaskRow.released.is_(False), TaskRow.handle.is_not(None))
            ).all()
        if not left:
            break
        assert time.monotonic() < deadline, "the moved attempts' tasks were not killed"
        time.sleep(0.2)
    with transaction(session_factory) as session:
        messages = session.scalars(select(TaskRow.message).where(TaskRow.attempt == 0)).all()
        assert set(messages) == {"node node-1 lost"}  # the leader's word stays
    leader.step()
    watch.tick()
    assert platform.ok("GET", "/api/v1/nodes")[0]["state"] == "ready"
    # Requeued: it runs again, as attempt 1; the other ended.
    platform.wait_for([again["id"]], states={"running"})
    with transaction(session_factory) as session:
        admitted = session.scalars(
            select(JobEventRow).where(
                JobEventRow.job_id == again["id"], JobEventRow.to_state == "admitted"
            )
        ).all()
        assert len(admitted) == 2  # once per attempt


def test_a_sites_nodes_are_never_lost_for_want_of_heartbeats(
    platform: Platform, session_factory: sessionmaker[Session]
) -> None:
    """A Slurm site's nodes send no heartbeat (sinfo says how they are): the watch leaves
    them ready, and takes back a lost mark an older version put on them."""
    mono = FakeMono()
    leader = member(session_factory, "node-1", mono)
    leader.step()
    now = SystemClock().now()
    with transaction(session_factory) as session:
        nodes = [Node(f"hpc:n{i}", "hpc:gpu", "hpc", Resources(4000, 2**30, 0)) for i in (1, 2)]
        record_inventory(session, nodes, now)
    with transaction(session_factory) as session:
        session.execute(update(NodeRow).where(NodeRow.name == "hpc:n2").values(lost_at=now))
    watch = NodeWatch(
        session_factory, SystemClock(), NodeWatchConfig(node_lost_s=2), leader.guard, mono
    )
    for _ in range(10):
        mono.now += 0.5
        leader.step()
        watch.tick()
    states = {n["name"]: n["state"] for n in platform.ok("GET", "/api/v1/nodes")}
    assert states["hpc:n1"] == "ready" and states["hpc:n2"] == "ready", states


def test_nodes_list_shows_class_labels_state_heartbeat_and_leader(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as session:
        session.execute(
            update(NodeRow)
            .where(NodeRow.name == "node-1")
            .values(node_class="gpu", labels={"ib": "", "rack": "r1"}, address="10.0.0.1")
        )
    leader = member(session_factory, "node-1", FakeMono())
    leader.step()
    [node] = platform.ok("GET", "/api/v1/nodes", alice)
    assert node["class"] == "gpu" and node["labels"] == {"ib": "", "rack": "r1"}
    assert node["state"] == "ready" and node["leader"] is True
    assert node["heartbeat_age_s"] is not None and node["heartbeat_age_s"] < 5
    assert node["capacity"]["cpu"] == 4 and "allocated" in node


def test_only_administrators_cordon_drain_and_uncordon(platform: Platform, alice: str) -> None:
    refused = platform.call("POST", "/api/v1/nodes/node-1/cordon", alice)
    assert refused.status_code == 403
    assert platform.call("POST", "/api/v1/nodes/nope/cordon").status_code == 404
    assert platform.ok("POST", "/api/v1/nodes/node-1/cordon")["state"] == "cordoned"
    job = platform.submit(alice, ["true"])
    platform.tick()
    assert platform.job(job["id"])["state"] == "pending"  # no new placement on a cordoned node
    assert platform.ok("POST", "/api/v1/nodes/node-1/uncordon")["state"] == "ready"
    assert platform.wait_for([job["id"]])[job["id"]]["state"] == "succeeded"


def test_drain_with_requeue_moves_running_jobs_off_the_node(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    add_node(session_factory, "node-2", state="cordoned")  # a second machine, no room yet
    leader = member(session_factory, "node-1", FakeMono())
    leader.step()
    watch = NodeWatch(session_factory, SystemClock(), NodeWatchConfig(), leader.guard)
    job = platform.submit(alice, ["sleep", "30"])
    platform.wait_for([job["id"]], states={"running"})
    drained = platform.ok("POST", "/api/v1/nodes/node-1/drain", json={"requeue": True})
    assert drained["state"] == "draining"
    watch.tick()
    platform.wait_for([job["id"]], states={"pending"})
    reasons = [e["reason"] for e in platform.job(job["id"])["events"]]
    assert "node node-1 is draining" in reasons
    assert "requeued: node node-1 is draining" in reasons
    platform.tick()
    assert platform.job(job["id"])["state"] == "pending"  # node-2 is cordoned, node-1 draining
    platform.ok("POST", "/api/v1/nodes/node-2/uncordon")
    platform.scheduling.tick()
    assert platform.job(job["id"])["placement"][0]["node"] == "node-2"


def test_jobs_target_a_node_class_and_labels(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as session:
        session.execute(update(NodeRow).values(node_class="light", labels={"rack": "r1"}))
    add_node(session_factory, "gpu01", node_class="gpu", labels={"ib": "", "rack": "r2"})
    on_gpu = platform.submit(alice, ["true"], node_class="gpu", constraints=["ib"])
    on_r1 = platform.submit(alice, ["true"], constraints=["rack=r1"])
    platform.scheduling.tick()
    assert platform.job(on_gpu["id"])["placement"][0]["node"] == "gpu01"
    assert platform.job(on_gpu["id"])["node_class"] == "gpu"
    assert platform.job(on_r1["id"])["placement"][0]["node"] == "node-1"
    nowhere = platform.call(
        "POST",
        "/api/v1/jobs",
        alice,
        json={"command": ["true"], "node_class": "fat", "resources": {"cpu": 1}},
    )
    assert nowhere.status_code == 422
    assert "no node matches its node class and constraints" in nowhere.json()["message"]
    bad = platform.call(
        "POST", "/api/v1/jobs", alice, json={"command": ["true"], "constraints": ["a b"]}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "constraints"
    bad_class = platform.call(
        "POST", "/api/v1/jobs", alice, json={"command": ["true"], "node_class": "huge"}
    )
    assert bad_class.status_code == 422 and "node_class" in bad_class.text


def test_a_class_walltime_cap_refuses_longer_jobs_and_keeps_them_off(
    platform: Platform, alice: str, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as session:
        session.execute(update(NodeRow).values(node_class="gpu"))
    add_node(session_factory, "light01", node_class="light")
    rules = platform.context.rules  # read at every request
    object.__setattr__(rules, "max_walltime_by_class", {"gpu": 12 * 3600})
    refused = platform.call(
        "POST",
        "/api/v1/jobs",
        alice,
        json={"command": ["true"], "node_class": "gpu", "time": "13h"},
    )
    assert refused.status_code == 422 and refused.json()["field"] == "time"
    long = platform.submit(alice, ["true"], time="13h")
    loop = SchedulingLoop(
        session_factory, SystemClock(), rules.policy, max_walltime_by_class={"gpu": 12 * 3600}
    )
    loop.tick()
    assert platform.job(long["id"])["placement"][0]["node"] == "light01"
