"""`virtuai vc exec` with standard input and a terminal: a real `virtuai up`, the real CLI.

A file of a few MiB piped in arrives whole (checksum); no input means EOF at
once; `-it` under a real pseudo-terminal echoes keystrokes and returns the
shell's exit code; another tenant is refused before any WebSocket is opened.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator

import pytest

from support.server import CLI, Server
from support.vclusters import can_run_vcs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs())),
]

# The e2e module's fixtures: a runtime of the test's own and a server on it.
from test_e2e_vc import runtime_config, server  # noqa: E402, F401

MIB = 1024 * 1024


@pytest.fixture
def lab(server: Server) -> Iterator[tuple[Server, str, str]]:  # noqa: F811
    server.cli("tenant", "create", "physics", "--cpu", "2", "--memory", "2Gi")
    server.cli("tenant", "create", "chem", "--cpu", "1", "--memory", "1Gi")
    alice = server.cli("user", "create", "alice", "--tenant", "physics").strip()
    bob = server.cli("user", "create", "bob", "--tenant", "chem").strip()
    created = server.cli(
        "vc", "create", "lab", "--nodes", "1", "--cpu-per-node", "0.5",
        "--memory-per-node", "256Mi", "--wait", token=alice,
    )  # fmt: skip
    assert "(running:" in created, created
    yield server, alice, bob
    server.cli("vc", "delete", "lab", "--wait", token=alice)


def _exec(
    srv: Server, token: str, *args: str, stdin: int | bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**srv.env, "VIRTUAI_TOKEN": token}
    return subprocess.run(
        [*CLI, "vc", "exec", *args],
        env=env,
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=stdin if not isinstance(stdin, bytes) else None,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_stdin_a_terminal_and_other_tenants(lab: tuple[Server, str, str]) -> None:
    """One cluster for all (a cluster takes seconds to create)."""
    srv, alice, bob = lab
    data = os.urandom(3 * MIB) + b"\x00\xff\r\n"  # binary-safe, beyond the 1 MiB body limit
    wrote = _exec(srv, alice, "lab", "--", "sh", "-c", "cat > /shared/x; echo done >&2",
                  stdin=data)  # fmt: skip
    assert (wrote.returncode, wrote.stderr) == (0, b"done\n"), wrote.stderr
    summed = _exec(srv, alice, "lab", "--", "sha256sum", "/shared/x",
                   stdin=subprocess.DEVNULL)  # fmt: skip
    assert summed.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()

    # The same bytes come back out unchanged (output is binary-safe too).
    back = _exec(srv, alice, "lab", "--", "cat", "/shared/x", stdin=subprocess.DEVNULL)
    assert back.returncode == 0 and back.stdout == data

    # No input: the command reads EOF at once instead of waiting.
    started = time.monotonic()
    empty = _exec(srv, alice, "lab", "--", "sh", "-c", "wc -c; exit 4",
                  stdin=subprocess.DEVNULL)  # fmt: skip
    assert (empty.returncode, empty.stdout.strip()) == (4, b"0"), empty.stderr
    assert time.monotonic() - started < 30
    # -n sends nothing even though input is piped.
    skipped = _exec(srv, alice, "lab", "-n", "--", "wc", "-c", stdin=b"ignored")
    assert skipped.stdout.strip() == b"0"

    # Another tenant's member: the cluster does not exist for them (404, like a missing one).
    refused = _exec(srv, bob, "lab", "--", "true", stdin=subprocess.DEVNULL)
    assert refused.returncode != 0
    assert b"virtual cluster lab not found" in refused.stderr, refused.stderr
    nobody = _exec(srv, "vai_" + "x" * 40, "lab", "--", "true", stdin=subprocess.DEVNULL)
    assert nobody.returncode != 0 and b"Traceback" not in nobody.stderr

    _interactive_terminal(srv, alice)
    # At a terminal without -i nothing is read from it: `cat` ends at once.
    pid, master = pty.fork()
    if pid == 0:
        env = {**srv.env, "VIRTUAI_TOKEN": alice}
        os.execve(CLI[0], [*CLI, "vc", "exec", "lab", "--", "sh", "-c", "cat; echo eof"], env)
    try:
        assert b"eof" in _read_until(master, b"eof", eof=True)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        os.close(master)


def _interactive_terminal(srv: Server, alice: str) -> None:
    env = {**srv.env, "VIRTUAI_TOKEN": alice, "TERM": "xterm", "COLUMNS": "", "LINES": ""}
    pid, master = pty.fork()
    if pid == 0:  # the CLI, on a real terminal as a user runs it
        os.execve(CLI[0], [*CLI, "vc", "exec", "-it", "lab", "--", "sh"], env)
    try:
        _set_size(master, 40, 132)
        seen = _read_until(master, b"$ ")  # the shell's prompt: it is interactive
        os.write(master, b"stty size; [ -t 0 ] && echo on-a-tty; echo hi; exit 3\r")
        seen += _read_until(master, b"hi\r\n", eof=True)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 3, seen
    text = seen.decode(errors="replace")
    assert "echo hi" in text  # the remote terminal echoed the keystrokes
    assert "40 132" in text  # the window size was passed
    assert "\non-a-tty" in text  # a real terminal in the node


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, marker: bytes, *, eof: bool = False, timeout: float = 30) -> bytes:
    """Read the terminal until ``marker`` has come (and then EOF, with ``eof``)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in seen and not eof:
            return seen
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the CLI has exited
            chunk = b""
        if not chunk:
            break
        seen += chunk
    assert marker in seen, seen
    return seen
