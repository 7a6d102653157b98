"""The private network of a cluster: peers reach each other; nobody else is reachable.

Only addresses of this machine's own namespaces are ever used: nothing leaves it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from vc_helpers import (
    ECONNREFUSED,
    ENETUNREACH,
    MakeSpec,
    connect,
    echo_server,
    host_server,
    sh,
)

from virtuai.vcruntime import VcRuntime, VcSpec


@pytest.fixture
def pair(runtime: VcRuntime, make_spec: MakeSpec) -> Iterator[tuple[VcSpec, VcSpec]]:
    """Two clusters with a gateway each (a default route: only the firewall stops them)."""
    a, b = make_spec(2, gateway=True), make_spec(1, gateway=True)
    runtime.create(a)
    runtime.create(b)
    yield a, b
    runtime.delete(a.id)
    runtime.delete(b.id)


def test_peers_reach_each_other_by_name(runtime: VcRuntime, vc: VcSpec) -> None:
    with echo_server(runtime, vc.id, 0, 7000):
        assert connect(runtime, vc.id, 1, vc.hostname(0), 7000) == "echo:hi"
        assert connect(runtime, vc.id, 1, str(vc.address(0)), 7000) == "echo:hi"
    hosts = sh(runtime, vc.id, 1, "cat /etc/hosts")
    assert f"{vc.address(0)}\t{vc.hostname(0)}" in hosts
    assert f"{vc.address(1)}\t{vc.hostname(1)}" in hosts


def test_each_node_has_its_own_address_and_loopback(runtime: VcRuntime, vc: VcSpec) -> None:
    out = sh(runtime, vc.id, 1, "ip -4 -o address show")
    assert f"inet {vc.address(1)}/24" in out and "inet 127.0.0.1/8" in out
    assert out.count("inet ") == 2  # lo and eth0: nothing of the host
    # no gateway: no route out of the subnet
    assert "default" not in sh(runtime, vc.id, 1, "ip -4 route show")


def test_no_route_out_without_gateway(runtime: VcRuntime, vc: VcSpec, make_spec: MakeSpec) -> None:
    other = make_spec(1)
    runtime.create(other)
    try:
        with echo_server(runtime, other.id, 0, 7001):
            assert connect(runtime, vc.id, 0, str(other.address(0)), 7001) == f"error:{ENETUNREACH}"
            assert connect(runtime, vc.id, 0, str(vc.gateway_address), 7001).startswith(
                ("timeout", "error")
            )
    finally:
        runtime.delete(other.id)


def test_clusters_cannot_reach_each_other(runtime: VcRuntime, pair: tuple[VcSpec, VcSpec]) -> None:
    a, b = pair
    with echo_server(runtime, b.id, 0, 7002):
        # the listener works from inside its own cluster...
        assert connect(runtime, b.id, 0, "127.0.0.1", 7002) == "echo:hi"
        # ...but another cluster's packets are dropped on the way (routed, then nft).
        assert connect(runtime, a.id, 0, str(b.address(0)), 7002) == "timeout"
    with echo_server(runtime, a.id, 1, 7003):
        assert connect(runtime, b.id, 0, str(a.address(1)), 7003) == "timeout"
        assert connect(runtime, a.id, 0, a.hostname(1), 7003) == "echo:hi"


def test_the_hosts_processes_cannot_reach_nodes(
    runtime: VcRuntime, pair: tuple[VcSpec, VcSpec]
) -> None:
    """Host -> cluster is filtered like cluster -> cluster (issue #11: a plain job of another
    tenant reached a web server inside a cluster)."""
    a, b = pair
    with echo_server(runtime, b.id, 0, 7004):
        assert connect(runtime, b.id, 0, str(b.address(0)), 7004) == "echo:hi"  # it listens
        # this test process is a process of the host (root, even): dropped, never answered
        assert connect_from_host(str(b.address(0)), 7004) == "error:timed out"
        assert connect(runtime, a.id, 0, str(b.address(0)), 7004) == "timeout"
    # and nodes still reach the outside world through their gateway: replies come back
    assert "default via" in sh(runtime, a.id, 0, "ip -4 route show")


def test_nodes_cannot_reach_the_hosts_services(
    runtime: VcRuntime, pair: tuple[VcSpec, VcSpec]
) -> None:
    a, _ = pair
    with host_server("0.0.0.0") as port:
        assert connect_from_host("127.0.0.1", port) == "host"
        assert connect_from_host(str(a.gateway_address), port) == "host"
        # the host's bridge-facing address: dropped by the input chain
        assert connect(runtime, a.id, 0, str(a.gateway_address), port) == "timeout"
        # 127.0.0.1 inside a node is the node's own loopback, not the host's
        assert connect(runtime, a.id, 0, "127.0.0.1", port) == f"error:{ECONNREFUSED}"


def test_gateway_cluster_has_a_default_route(
    runtime: VcRuntime, pair: tuple[VcSpec, VcSpec]
) -> None:
    a, _ = pair
    routes = sh(runtime, a.id, 0, "ip -4 route show")
    assert f"default via {a.gateway_address}" in routes


def connect_from_host(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.sendall(b"hi")
            return conn.recv(100).decode()
    except OSError as exc:
        return f"error:{exc}"
