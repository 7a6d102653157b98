"""The services' pure decisions: how many replicas, which to start and which to drain.

The rolling property is checked by playing the planner against a world where any
replica may become ready at any pass: across a whole roll, the number of ready
replicas that serve never drops below what is wanted once it was reached, and the
roll ends with only the new generation."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from virtuai.domain.services import (
    PortRules,
    ReplicaPlan,
    ReplicaView,
    ServiceSpec,
    crash_backoff_s,
    desired_replicas,
    plan_replicas,
    renewal_margin_s,
    replica_command,
)


def _spec(**values: object) -> ServiceSpec:
    base = ServiceSpec(command=("python3", "m.py"), cpu_milli=500, memory=2**28)
    return replace(base, **values)  # type: ignore[arg-type]


def test_desired_follows_min_idleness_and_rate() -> None:
    spec = _spec(min_replicas=0, max_replicas=4, target_rps=10.0)
    now = 1000.0
    assert desired_replicas(spec, now=now, last_request=None, rate=0, idle_timeout_s=60) == 0
    assert desired_replicas(spec, now=now, last_request=now - 61, rate=0, idle_timeout_s=60) == 0
    assert desired_replicas(spec, now=now, last_request=now - 5, rate=0, idle_timeout_s=60) == 1
    assert desired_replicas(spec, now=now, last_request=now, rate=25, idle_timeout_s=60) == 3
    assert desired_replicas(spec, now=now, last_request=now, rate=1000, idle_timeout_s=60) == 4
    fixed = _spec(min_replicas=2, max_replicas=2)
    assert desired_replicas(fixed, now=now, last_request=None, rate=0, idle_timeout_s=60) == 2


def test_a_changed_template_changes_the_digest_and_scale_does_not() -> None:
    spec = _spec(min_replicas=1, max_replicas=2)
    assert spec.template_digest() == _spec(min_replicas=0, max_replicas=5).template_digest()
    assert spec.template_digest() == replace(spec, auth="public").template_digest()
    assert spec.template_digest() != replace(spec, env={"V": "2"}).template_digest()
    assert spec.template_digest() != replace(spec, command=("python3", "n.py")).template_digest()
    assert ServiceSpec.from_json(spec.to_json()) == spec


def test_the_replica_command_sets_port_from_the_rendezvous_port() -> None:
    assert replica_command(["python3", "m.py"])[:2] == ("/bin/sh", "-c")
    assert replica_command(["python3", "m.py"])[-2:] == ("python3", "m.py")


def test_new_service_starts_all_at_once_and_surplus_drains_unready_first() -> None:
    assert plan_replicas([], 1, 3).start == 3
    replicas = [
        ReplicaView(1, 1, ready=True, order=1),
        ReplicaView(2, 1, ready=False, order=2),
        ReplicaView(3, 1, ready=True, order=3),
    ]
    assert plan_replicas(replicas, 1, 2).drain == (2,)
    assert plan_replicas(replicas, 1, 0).drain == (1, 2, 3)


def test_rolling_starts_one_and_drains_an_old_one_only_for_a_ready_new_one() -> None:
    old = [ReplicaView(1, 1, ready=True, order=1), ReplicaView(2, 1, ready=True, order=2)]
    assert plan_replicas(old, 2, 2) == plan_replicas(old, 2, 2).__class__(start=1, drain=())
    starting = [*old, ReplicaView(3, 2, ready=False, order=3)]
    plan = plan_replicas(starting, 2, 2)
    assert plan.start == 0 and plan.drain == ()
    ready = [*old, ReplicaView(3, 2, ready=True, order=3)]
    plan = plan_replicas(ready, 2, 2)
    assert plan.drain == (1,) and plan.start == 1


@settings(max_examples=200, deadline=None)
@given(
    old=st.integers(min_value=1, max_value=5),
    desired=st.integers(min_value=1, max_value=5),
    readiness=st.lists(st.booleans(), min_size=200, max_size=200),
)
def test_a_roll_never_serves_with_fewer_ready_replicas_than_wanted(
    old: int, desired: int, readiness: list[bool]
) -> None:
    # The world: replicas by id -> (generation, ready, draining).  Old generation 1 all
    # ready; the spec moves to generation 2.
    world = {i: [1, True, False] for i in range(1, old + 1)}
    next_id = old + 1
    coin = iter(readiness)
    floor = min(old, desired)
    for step in range(80):
        views = [ReplicaView(i, g, ready=r, draining=d, order=i) for i, (g, r, d) in world.items()]
        plan = plan_replicas(views, 2, desired)
        for rid in plan.drain:
            world[rid][2] = True
        for _ in range(plan.start):
            world[next_id] = [2, False, False]
            next_id += 1
        serving = sum(1 for g, r, d in world.values() if r and not d)
        assert serving >= floor
        # Drained replicas leave; starting ones may become ready.
        world = {i: v for i, v in world.items() if not v[2]}
        for value in world.values():
            # Random for 60 passes, then every replica becomes ready: the roll must end.
            if not value[1] and (next(coin, True) or step >= 60):
                value[1] = True
    assert sorted(g for g, _, _ in world.values()) == [2] * desired
    assert all(r for _, r, _ in world.values())


def test_a_fixed_port_is_kept_and_an_auto_spec_digests_as_before_fixed_ports() -> None:
    auto = _spec()
    assert "port" not in auto.to_json()  # so `auto` services do not roll on upgrade
    fixed = _spec(port=8000)
    assert ServiceSpec.from_json(fixed.to_json()) == fixed
    assert fixed.template_digest() != auto.template_digest()  # a new port rolls


def test_fixed_ports_outside_the_ephemeral_and_replica_ranges_and_the_servers() -> None:
    rules = PortRules(ephemeral=(32768, 60999), replicas=(30000, 32767), server=frozenset({8642}))
    assert rules.problem(8000) is None
    assert rules.problem(61000) is None
    ephemeral = rules.problem(40000)
    assert ephemeral is not None and "ephemeral range (32768-60999)" in ephemeral
    ranged = rules.problem(30000)
    assert ranged is not None and "$PORT" in ranged
    server = rules.problem(8642)
    assert server is not None and "virtuai server" in server


def test_a_roll_whose_new_replica_waits_for_its_fixed_port_takes_one_old_away_first() -> None:
    old = [ReplicaView(i, 1, ready=True, order=i) for i in (1, 2)]
    waiting = ReplicaView(3, 2, ready=False, order=3, waits_for_port=True)
    assert plan_replicas([*old, waiting], 2, 2) == ReplicaPlan(0, (1,))
    # While that one stops, nothing more leaves.
    stopping = replace(old[0], draining=True)
    assert plan_replicas([stopping, old[1], waiting], 2, 2) == ReplicaPlan(0, ())
    # Without a port to wait for, the roll adds before it takes away (as before).
    assert plan_replicas([*old, replace(waiting, waits_for_port=False)], 2, 2) == ReplicaPlan()


def test_the_renewal_margin_covers_the_drain_and_a_start_and_is_at_most_half_the_limit() -> None:
    def margin(time_s: float, startup_s: float = 1.0, floor_s: float = 30.0) -> float:
        return renewal_margin_s(
            time_s=time_s, startup_s=startup_s, interval_s=2.0, drain_s=12.0, floor_s=floor_s
        )

    assert margin(3600) == 30.0  # the setting
    assert margin(3600, startup_s=20.0) == 12.0 + 40.0 + 4.0  # a slow start: more
    assert margin(3600, floor_s=0.0) == 12.0 + 2.0 + 4.0
    assert margin(20) == 10.0  # half a short limit: it serves half its time


def test_an_expiring_replica_gets_its_replacement_and_is_drained_once_that_is_ready() -> None:
    expiring = ReplicaView(1, 1, ready=True, order=1, expiring=True)
    other = ReplicaView(2, 1, ready=True, order=2)
    assert plan_replicas([expiring, other], 1, 2) == ReplicaPlan(start=1)
    starting = ReplicaView(3, 1, ready=False, order=3)
    assert plan_replicas([expiring, other, starting], 1, 2) == ReplicaPlan()
    ready = replace(starting, ready=True)
    assert plan_replicas([expiring, other, ready], 1, 2) == ReplicaPlan(drain=(1,))
    # Two expiring at once (started together): both replacements start together.
    both = [expiring, replace(other, expiring=True)]
    assert plan_replicas(both, 1, 2) == ReplicaPlan(start=2)
    # One replica and a changed spec as it expires: one replacement, of the new generation.
    assert plan_replicas([expiring], 2, 1) == ReplicaPlan(start=1)
    # Scaled to zero: it goes at once.
    assert plan_replicas([expiring], 1, 0) == ReplicaPlan(drain=(1,))


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=5),
    desired=st.integers(min_value=1, max_value=5),
    roll=st.booleans(),
    coins=st.lists(st.booleans(), min_size=400, max_size=400),
)
def test_replicas_near_their_limit_are_replaced_without_serving_fewer_than_wanted(
    count: int, desired: int, roll: bool, coins: list[bool]
) -> None:
    # The world: id -> [generation, ready, draining, expiring].  Any ready replica may
    # come near its limit at any pass (and a changed spec may roll meanwhile); it ends
    # at its limit only after its replacement had time to be ready (the margin's job).
    generation = 2 if roll else 1
    world = {i: [1, True, False, False] for i in range(1, count + 1)}
    next_id = count + 1
    coin = iter(coins)
    floor = min(count, desired)
    for step in range(100):
        views = [
            ReplicaView(i, g, ready=r, draining=d, order=i, expiring=e)
            for i, (g, r, d, e) in world.items()
        ]
        plan = plan_replicas(views, generation, desired)
        for rid in plan.drain:
            world[rid][2] = True
        for _ in range(plan.start):
            world[next_id] = [generation, False, False, False]
            next_id += 1
        serving = sum(1 for g, r, d, _ in world.values() if r and not d)
        assert serving >= floor
        world = {i: v for i, v in world.items() if not v[2]}
        for value in world.values():
            settle = step >= 60  # then every replica becomes ready and none expires
            if not value[1] and (next(coin, True) or settle):
                value[1] = True
            elif value[1] and not value[3] and not settle and next(coin, False):
                value[3] = True
    assert sorted(g for g, *_ in world.values()) == [generation] * desired
    assert all(r and not e for _, r, _, e in world.values())


@given(st.integers(min_value=0, max_value=10_000))
def test_crash_backoff_doubles_up_to_its_cap(crashes: int) -> None:
    wait = crash_backoff_s(crashes, 1.0, 300.0)
    if crashes == 0:
        assert wait == 0.0
    else:
        assert 1.0 <= wait <= 300.0
        assert wait == min(300.0, 2 * crash_backoff_s(crashes - 1, 1.0, 300.0)) or crashes == 1
