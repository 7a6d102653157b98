"""Subnets of virtual clusters: pure address arithmetic, no I/O.

Every virtual cluster gets one ``/24`` (by default) out of a pool
(``10.240.0.0/16``: 256 clusters).  Inside it the bridge on the host takes
``.1`` (the gateway address) and node ``i`` takes ``.(i + 2)``, so a ``/24``
holds 253 nodes.  The allocation is a pure function of the subnets already in
use (the platform's database knows them), so it is trivially testable and the
same answer comes out of every replica of the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from virtuai.errors import InvalidRequest, Unschedulable

DEFAULT_POOL = "10.240.0.0/16"
DEFAULT_PREFIXLEN = 24
FIRST_NODE_OFFSET = 2  # .0 network, .1 gateway (the bridge), nodes from .2


def parse_subnet(text: str | IPv4Network, *, field: str = "subnet") -> IPv4Network:
    """A strict IPv4 network (``10.240.3.0/24``; host bits must be zero)."""
    if isinstance(text, IPv4Network):
        return text
    try:
        net = ipaddress.ip_network(str(text), strict=True)
    except ValueError as exc:
        raise InvalidRequest(
            f"{field} {text!r} is not an IPv4 network: {exc}", field=field
        ) from None
    if not isinstance(net, IPv4Network):
        raise InvalidRequest(f"{field} {text!r} is not an IPv4 network", field=field)
    return net


def allocate_subnet(
    used: Iterable[str | IPv4Network],
    pool: str | IPv4Network = DEFAULT_POOL,
    prefixlen: int = DEFAULT_PREFIXLEN,
) -> IPv4Network:
    """The lowest subnet of ``pool`` with ``prefixlen`` that overlaps none of ``used``.

    Raises ``Unschedulable`` when the pool is full.
    """
    pool_net = parse_subnet(pool, field="pool")
    if not pool_net.prefixlen <= prefixlen <= 30:
        raise InvalidRequest(
            f"cannot cut /{prefixlen} subnets out of {pool_net}", field="prefixlen"
        )
    taken = [parse_subnet(u, field="used") for u in used]
    for candidate in pool_net.subnets(new_prefix=prefixlen):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise Unschedulable(f"no free /{prefixlen} subnet left in the virtual cluster pool {pool_net}")


def gateway_address(subnet: IPv4Network) -> IPv4Address:
    """The bridge's address: the first host of the subnet."""
    return subnet.network_address + 1


def node_address(subnet: IPv4Network, index: int) -> IPv4Address:
    if not 0 <= index < max_nodes(subnet):
        raise InvalidRequest(
            f"node {index} does not fit in {subnet} (at most {max_nodes(subnet)} nodes)",
            field="nodes",
        )
    return subnet.network_address + FIRST_NODE_OFFSET + index


def max_nodes(subnet: IPv4Network) -> int:
    """Nodes a subnet holds: all addresses but network, gateway and broadcast."""
    return max(0, subnet.num_addresses - FIRST_NODE_OFFSET - 1)


def in_pool(subnet: IPv4Network, pool: str | IPv4Network = DEFAULT_POOL) -> bool:
    return subnet.subnet_of(parse_subnet(pool, field="pool"))
