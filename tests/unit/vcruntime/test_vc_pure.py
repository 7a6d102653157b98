"""The runtime's pure parts: address plan, names, specs, generated files, firewall scripts."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtuai.errors import InvalidRequest, Unschedulable
from virtuai.host.sandbox import VirtualNode
from virtuai.vcruntime import firewall, ipam
from virtuai.vcruntime.images import _resolves_in, find_keepalive
from virtuai.vcruntime.naming import IFNAMSIZ, MAX_NODE_INDEX, Names, Parser, vc_tag
from virtuai.vcruntime.spec import NodeSpec, VcSpec, env_file, hostfile, hosts_file, node_env
from virtuai.vcruntime.storage import _outermost, check_state_dir


def spec(n: int = 3, **kw: object) -> VcSpec:
    fields: dict[str, object] = {
        "id": "42",
        "name": "lab",
        "tenant": "physics",
        "subnet": "10.240.7.0/24",
        "nodes": tuple(NodeSpec(1000, 2**30, (i,)) for i in range(n)),
    }
    fields.update(kw)
    return VcSpec(**fields)  # type: ignore[arg-type]


# -- ipam -----------------------------------------------------------------------------------


def test_allocation_takes_the_lowest_free_subnet() -> None:
    assert str(ipam.allocate_subnet([])) == "10.240.0.0/24"
    used = ["10.240.0.0/24", "10.240.2.0/24"]
    assert str(ipam.allocate_subnet(used)) == "10.240.1.0/24"
    # a bigger block in use covers several /24s
    assert str(ipam.allocate_subnet(["10.240.0.0/23"])) == "10.240.2.0/24"
    with pytest.raises(Unschedulable, match="no free /24"):
        ipam.allocate_subnet([f"10.240.{i}.0/24" for i in range(256)])
    with pytest.raises(InvalidRequest):
        ipam.allocate_subnet([], pool="10.240.0.0/16", prefixlen=8)


@given(st.sets(st.integers(0, 255), max_size=255))
def test_allocation_never_overlaps(taken: set[int]) -> None:
    used = [f"10.240.{i}.0/24" for i in taken]
    got = ipam.allocate_subnet(used)
    assert not any(got.overlaps(ipaddress.ip_network(u)) for u in used)
    assert got.subnet_of(ipaddress.ip_network(ipam.DEFAULT_POOL))  # type: ignore[arg-type]


def test_addresses_in_a_subnet() -> None:
    net = ipam.parse_subnet("10.240.7.0/24")
    assert str(ipam.gateway_address(net)) == "10.240.7.1"
    assert str(ipam.node_address(net, 0)) == "10.240.7.2"
    assert str(ipam.node_address(net, 252)) == "10.240.7.254"
    assert ipam.max_nodes(net) == 253
    with pytest.raises(InvalidRequest):
        ipam.node_address(net, 253)
    with pytest.raises(InvalidRequest):
        ipam.parse_subnet("10.240.7.1/24")  # host bits set


# -- names ----------------------------------------------------------------------------------


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63))
def test_names_fit_the_kernel_and_parse_back(suffix: str) -> None:
    vc_id = "a" + suffix[:62]
    names = Names.of("vai", vc_id)
    parse = Parser("vai")
    for i in (0, 9, MAX_NODE_INDEX):
        assert len(names.veth(i)) <= IFNAMSIZ
        assert parse.veth(names.veth(i)) == (names.tag, i)
        assert parse.netns(names.netns(i)) == (names.tag, i)
        assert parse.cgroup(names.cgroup(i)) == (names.tag, i)
    assert len(names.bridge) <= IFNAMSIZ and parse.bridge(names.bridge) == names.tag
    assert parse.chain(names.chain("from")) == names.tag
    # another prefix never claims these
    assert Parser("vax").bridge(names.bridge) is None
    assert Parser("va").netns(names.netns(0)) is None


def test_prefix_and_id_rules() -> None:
    with pytest.raises(InvalidRequest):
        Names.of("toolong", "x")
    with pytest.raises(InvalidRequest):
        Names.of("vai", "../etc")
    assert vc_tag("a") != vc_tag("b") and len(vc_tag("a")) == 8


# -- specs ----------------------------------------------------------------------------------


def test_spec_round_trips_and_validates() -> None:
    s = spec()
    assert VcSpec.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert s.validate() is s
    assert s.hostname(2) == "lab-2" and str(s.address(2)) == "10.240.7.4"
    for bad, field in [
        (spec(name="Lab"), "name"),
        (spec(nodes=()), "nodes"),
        (spec(subnet="10.240.7.0/30", nodes=(NodeSpec(),) * 2), "nodes"),
        (spec(nodes=(NodeSpec(memory=1024),)), "nodes[0]"),
        (spec(nodes=(NodeSpec(gpu_indices=(1, 1)),)), "nodes[0]"),
        (spec(user="root"), "user"),
        (spec(name="x" * 62, nodes=(NodeSpec(),) * 10), "name"),
        (spec(id="UPPER"), "id"),
    ]:
        with pytest.raises(InvalidRequest) as exc:
            bad.validate()
        assert exc.value.field == field, (bad, exc.value.message)


def test_generated_files() -> None:
    s = spec(2)
    hosts = hosts_file(s).splitlines()
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert hosts[-2:] == ["10.240.7.2\tlab-0", "10.240.7.3\tlab-1"]
    assert hostfile(s) == "lab-0 10.240.7.2\nlab-1 10.240.7.3\n"
    env = node_env(s, 1)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["VIRTUAI_HOSTFILE"] == "/etc/virtuai/hostfile"
    assert env_file({"A": "it's"}) == "A='it'\\''s'\n"


def test_a_virtual_node_goes_to_the_supervisor_as_json() -> None:
    node = VirtualNode("42", 1, "lab-1", 1234, 1.5, {"version": 2, "roots": {}, "parent": "p/k"})
    data = json.loads(json.dumps(node.to_json()))
    assert data["init_pid"] == 1234 and data["cgroup"]["parent"] == "p/k"
    assert (data["vc"], data["index"], data["hostname"]) == ("42", 1, "lab-1")


# -- firewall -------------------------------------------------------------------------------


def test_firewall_scripts() -> None:
    empty = firewall.NftState()
    isolated = firewall.vc_script("vai-1a2b3c4d", False, empty)
    assert 'add rule inet virtuai vai-1a2b3c4d-from oifname "vai-1a2b3c4d" accept' in isolated
    assert "add rule inet virtuai vai-1a2b3c4d-from drop" in isolated
    assert "masquerade" not in isolated
    gateway = firewall.vc_script("vai-1a2b3c4d", True, empty)
    assert "oifname @bridges drop" in gateway and "masquerade" in gateway
    assert firewall.expected_rules("vai-1a2b3c4d", True)["vai-1a2b3c4d-nat"] == 1
    # losing the gateway removes the NAT chain and its element, precisely
    had_nat = firewall.NftState(
        exists=True,
        chains={"vai-1a2b3c4d-nat"},
        map_keys={"nat_vc": {"vai-1a2b3c4d"}},
    )
    again = firewall.vc_script("vai-1a2b3c4d", False, had_nat)
    assert again.index("delete element inet virtuai nat_vc") < again.index("delete chain")
    delete = firewall.vc_delete_script("vai-1a2b3c4d", had_nat)
    assert delete.splitlines() == [
        'delete element inet virtuai nat_vc { "vai-1a2b3c4d" }',
        "delete chain inet virtuai vai-1a2b3c4d-nat",
    ]
    assert firewall.vc_delete_script("vai-ffffffff", had_nat) == ""


# -- storage and images ----------------------------------------------------------------------


def test_hidden_paths_and_state_dir_rules() -> None:
    assert _outermost(("/tmp", "/tmp/x", "/var/tmp", "/var", "/root")) == ["/root", "/tmp", "/var"]
    assert check_state_dir(Path("relative")) is not None
    assert check_state_dir(Path("/var/lib/a,b")) is not None
    assert check_state_dir(Path("/var/lib/virtuai")) is None


def test_keepalive_is_found_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "usr/bin/busybox").write_text("")
    (tmp_path / "usr/bin/sleep").symlink_to("/usr/bin/busybox")  # absolute: inside the image
    assert find_keepalive(tmp_path) == "/usr/bin/sleep"
    assert _resolves_in(tmp_path, "bin/sleep")
    (tmp_path / "usr/bin/loop").symlink_to("loop")
    assert not _resolves_in(tmp_path, "usr/bin/loop")
    (tmp_path / "usr/bin/out").symlink_to("../../../../etc/passwd")  # cannot leave the image
    assert not _resolves_in(tmp_path, "usr/bin/out")
