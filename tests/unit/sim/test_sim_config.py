"""Cluster and policy YAML: what they map to, and errors that name the line and the field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from virtuai.domain.resources import Resources
from virtuai.domain.tenancy import ANY_POOL, PoolQuota, Quota
from virtuai.errors import InvalidRequest
from virtuai.scheduler.snapshot import Policy
from virtuai.sim.cluster import parse_cluster
from virtuai.sim.policy import EXAMPLE_POLICIES, Backfill, Order, example_policy, parse_policy

Gi = 2**30

CLUSTER = """\
name: lab
pools:
  gpu: {count: 2, cpu: 64, memory: 512Gi, gpus: 8, gpu_model: H100, gpu_memory: 80Gi}
  cpu:
    count: 3
    cpu: 32
    memory: 128Gi
tenants:
  physics:
    weight: 2
    cohort: research
    quota: {gpu: 8, cpu: unlimited}
    lending_limit: {gpu: 4}
    pools:
      gpu: {quota: {gpu: 8}, borrowing_limit: {gpu: 4}}
  biology: {}
priority_classes:
  low: 10
  urgent: {value: 900, preemptible: false}
"""


def test_cluster_nodes_tenants_and_classes() -> None:
    spec = parse_cluster(CLUSTER)
    nodes = spec.nodes()
    assert [n.name for n in nodes] == ["gpu-0000", "gpu-0001", "cpu-0000", "cpu-0001", "cpu-0002"]
    assert nodes[0].capacity == Resources(64000, 512 * Gi, 8)
    assert [g.index for g in nodes[0].gpus] == list(range(8))
    assert nodes[0].gpus[0].model == "H100"
    assert spec.capacity == Resources(224000, (1024 + 384) * Gi, 16)
    physics = spec.tenant("physics")
    assert physics.weight == 2 and physics.cohort == "research"
    assert physics.quota == Quota(None, None, 8)
    state = physics.state()
    assert state.quotas == (
        PoolQuota(ANY_POOL, Quota(gpu=8), Quota(), Quota(gpu=4)),
        PoolQuota("gpu", Quota(gpu=8), Quota(gpu=4), Quota()),
    )
    assert (state.weight, state.cohort) == (2, "research")
    assert spec.tenant("biology").quota == Quota()
    assert spec.tenant("nobody").weight == 1.0  # not listed: defaults
    classes = spec.priority_classes
    assert (classes["urgent"].value, classes["urgent"].preemptible) == (900, False)
    assert classes["low"].preemptible


def test_cluster_yaml_round_trip() -> None:
    spec = parse_cluster(CLUSTER)
    assert parse_cluster(spec.to_yaml()) == spec


def test_slice_for_the_isolated_cluster() -> None:
    spec = parse_cluster(CLUSTER)
    alone = spec.sliced(0.25, "physics")
    assert [p.count for p in alone.pools] == [1, 1]  # at least one node per pool
    (tenant,) = alone.tenants
    assert tenant.name == "physics" and tenant.quota == Quota() and tenant.cohort is None


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("pools:\n  gpu: {count: 1, cpu: 8, memory: lots}\n", 2, "pools.gpu.memory"),
        ("pools:\n  gpu:\n    count: -1\n    cpu: 8\n    memory: 1Gi\n", 3, "pools.gpu.count"),
        ("pools:\n  gpu:\n    cpu: 8\n    memory: 1Gi\n", 2, "pools.gpu.count"),
        ("pools:\n  gpu: {count: 1, cpu: 8, memory: 1Gi, gpu: 8}\n", 2, "pools.gpu.gpu"),
        (
            "pools:\n  a: {count: 1, cpu: 8, memory: 1Gi}\ntenants:\n  t:\n    quota: {gpu: x}\n",
            5,
            "tenants.t.quota.gpu",
        ),
        (
            "pools:\n  a: {count: 1, cpu: 8, memory: 1Gi}\ntenants:\n  t:\n    pools: {b: {}}\n",
            5,
            "tenants.t.pools.b",
        ),
        ("pools:\n  a: {count: 1, cpu: 8, memory: 1Gi}\nnodes: 3\n", 3, "nodes"),
        ("pools:\n  a: {count: 1, cpu: 8, memory: 1Gi}\n  a: {count: 2}\n", 3, "a"),
        ("pools:\n  a: {count: 1, cpu: 8, memory: 1Gi, gpus: 100000}\n", 2, "pools.a.gpus"),
    ],
)
def test_cluster_errors_name_the_line_and_the_field(text: str, line: int, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_cluster(text, "c.yaml")
    assert caught.value.field == field
    assert caught.value.message.startswith(f"c.yaml line {line}: {field}"), caught.value.message


def test_cluster_needs_pools_and_a_mapping() -> None:
    with pytest.raises(InvalidRequest, match=r"c.yaml line 1: pools is required"):
        parse_cluster("name: x\n", "c.yaml")
    with pytest.raises(InvalidRequest, match=r"c.yaml line 1: expected a mapping"):
        parse_cluster("- a\n", "c.yaml")
    with pytest.raises(InvalidRequest, match=r"c.yaml line 2: not valid YAML"):
        parse_cluster("pools:\n  a: b: c\n", "c.yaml")
    with pytest.raises(InvalidRequest, match=r"c.yaml: not valid YAML: nested too deeply"):
        parse_cluster("pools: " + "[" * 5000, "c.yaml")


@pytest.mark.parametrize("counts", [(0,), (0, 0), (60_000, 40_001), (10**8,)])
def test_a_cluster_has_one_to_a_hundred_thousand_nodes(counts: tuple[int, ...]) -> None:
    """A typo of a few zeros would otherwise fill the memory, a node object a node."""
    pools = "".join(f"  p{k}: {{count: {n}, cpu: 8, memory: 1Gi}}\n" for k, n in enumerate(counts))
    with pytest.raises(InvalidRequest) as caught:
        parse_cluster("pools:\n" + pools, "c.yaml")
    assert caught.value.message == (
        f"c.yaml line 1: pools: needs 1 to 100,000 nodes in all, not {sum(counts):,}"
    )
    assert (
        parse_cluster("pools:\n  p: {count: 100000, cpu: 8, memory: 1Gi}\n").node_count == 100_000
    )


def test_policy_maps_onto_the_scheduler_policy() -> None:
    spec = parse_policy(
        "name: mine\norder: fairshare\nhalf_life: 2d\nallocation_weight: 0\nbackfill: easy\n"
        "preemption: true\nmax_victim_candidates: 10\nborrowing: false\npreemption_grace: 30s\n"
    )
    assert spec.scheduler_policy() == Policy(
        fair_share=True,
        backfill=True,
        preemption=True,
        borrowing=False,
        half_life_s=2 * 86400,
        allocation_weight=0.0,
        max_victim_candidates=10,
    )
    assert spec.preemption_grace_s == 30
    assert parse_policy("{}", "plain.yaml").scheduler_policy() == Policy()
    assert parse_policy("{}", "plain.yaml").name == "plain"
    assert parse_policy("backfill: true").backfill is Backfill.EASY


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("order: random\n", "order"),
        ("half_lfe: 7d\n", "half_lfe"),
        ("preemption: maybe\n", "preemption"),
        ("allocation_weight: 2\n", "allocation_weight"),
        ("half_life: soon\n", "half_life"),
        # Beyond 317 years, or a factor beyond a million: a typo, not a setting.
        ("min_run: 1.0e+300\n", "min_run"),
        ("restart_overhead: 20000000000\n", "restart_overhead"),
        ("las_thresholds: [1h, 1.0e+300]\n", "las_thresholds"),
        ("starvation_factor: .inf\n", "starvation_factor"),
        ("gang_victim_ratio: .nan\n", "gang_victim_ratio"),
    ],
)
def test_policy_errors(text: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_policy("name: p\n" + text, "p.yaml")
    assert caught.value.field == field
    assert caught.value.message.startswith(f"p.yaml line 2: {field}: "), caught.value.message


def test_example_policies_load() -> None:
    specs = {name: example_policy(name) for name in EXAMPLE_POLICIES}
    assert specs["fifo"].scheduler_policy() == Policy.fifo()
    assert specs["fairshare"].order is Order.FAIRSHARE
    assert specs["fairshare"].backfill is Backfill.NONE
    assert specs["fairshare-backfill"].backfill is Backfill.EASY
    full = specs["fairshare-backfill-preemption"].scheduler_policy()
    assert full == replace(Policy.fair(), min_run_s=600)
    las = specs["las-fairshare"]
    assert las.scheduler_policy() == Policy.las()
    assert (las.checkpoint_interval_s, las.restart_overhead_s) == (600, 60)
    with pytest.raises(InvalidRequest):
        example_policy("nope")


def test_short_first_is_read_and_reaches_the_scheduler() -> None:
    spec = parse_policy("order: fairshare\nshort_first: 2h\n")
    assert spec.scheduler_policy().short_first_cap_s == 7200
    assert spec.knobs()["short_first_cap_s"] == 7200
    assert parse_policy("{}").scheduler_policy().short_first_cap_s == 0
    with pytest.raises(InvalidRequest, match="short_first"):
        parse_policy("short_first: soon\n")


def test_gang_victim_ratio_is_read_and_reaches_the_scheduler_only_with_las() -> None:
    spec = parse_policy("order: las\ngang_victim_ratio: 1.5\n")
    assert spec.scheduler_policy().gang_victim_ratio == 1.5
    assert spec.knobs()["gang_victim_ratio"] == 1.5
    # Without LAS there are no LAS victims: the bound would mean nothing.
    assert parse_policy("order: fairshare\ngang_victim_ratio: 2\n").scheduler_policy() == (
        replace(Policy(), fair_share=True)
    )
    with pytest.raises(InvalidRequest, match="gang_victim_ratio"):
        parse_policy("order: las\ngang_victim_ratio: -1\n")
