"""The replica-port guard against the real kernel: an nftables table of its own (a random
name, dropped after), a real listener, and real clients as root and as another user."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from virtuai.host.portguard import PortGuard, free_port, table_name, unavailable

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nft"
)
NOBODY = 65534
_CONNECT = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.settimeout(5)\n"
    "try:\n"
    "    s.connect(('127.0.0.1', int(sys.argv[1])))\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
    "else:\n"
    "    print('connected')\n"
)


def _connect_as(uid: int, port: int) -> str:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", _CONNECT, str(port)],
        user=uid,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def guard() -> Iterator[PortGuard]:
    made = PortGuard(f"vai_test_{secrets.token_hex(4)}")
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_a_guarded_port_refuses_every_user_but_the_servers(guard: PortGuard, listener: int) -> None:
    assert unavailable() is None
    guard.setup()
    assert _connect_as(NOBODY, listener) == "connected"  # not guarded yet
    guard.add(listener)
    assert guard.ports() == {listener}
    assert _connect_as(NOBODY, listener) == "refused"
    assert _connect_as(0, listener) == "connected"  # the server's user (root here)
    guard.setup()  # again (a restart): the rules are rewritten, the ports kept
    assert guard.ports() == {listener}
    assert _connect_as(NOBODY, listener) == "refused"


def test_sync_makes_the_set_exactly_the_wanted_ports(guard: PortGuard, listener: int) -> None:
    guard.setup()
    guard.add(31001)
    guard.add(listener)
    added, removed = guard.sync({listener, 31002})
    assert (added, removed) == ({31002}, {31001})
    assert guard.ports() == {listener, 31002}
    assert guard.sync({listener, 31002}) == (set(), set())
    guard.sync(set())
    assert guard.ports() == set()
    assert _connect_as(NOBODY, listener) == "connected"


def test_the_table_is_the_installations() -> None:
    assert table_name("a1b2c3") == "virtuai_ports_a1b2c3"
    assert table_name("") == "virtuai_ports"


def test_free_port_skips_a_bound_port(listener: int) -> None:
    assert free_port([listener]) is None
    assert free_port([listener, 0]) == 0


def test_a_second_user_passes_when_given(listener: int) -> None:
    """``proxy.engine: nginx``: nginx's workers' user passes beside the server's."""
    both = PortGuard(f"vai_test_{secrets.token_hex(4)}", also=NOBODY)
    try:
        both.setup()
        both.add(listener)
        assert _connect_as(NOBODY, listener) == "connected"
        assert _connect_as(0, listener) == "connected"
        assert _connect_as(NOBODY - 1, listener) == "refused"
    finally:
        both.drop()
