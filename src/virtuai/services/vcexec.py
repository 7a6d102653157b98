"""A command in a virtual node, driven from asyncio: ``virtuai vc exec`` over a WebSocket.

``NodeCommand.start`` starts the command as ``services.vclusters.run_in_node`` does
(the tenant's unprivileged user, in ``/shared``), with its standard input a pipe
(or ``/dev/null`` when the client has none) and its output two pipes, or all three
on a pseudo-terminal made here (``tty``).  The methods move bytes without blocking
the event loop: a reader waits until its file descriptor is readable, a writer until
it is writable, so a slow client slows the command down (pipe and socket buffers
fill) instead of making the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import subprocess
import termios
from collections.abc import Sequence
from dataclasses import dataclass

from virtuai.services.vclusters import ExecTarget
from virtuai.vcruntime import VcRuntime
from virtuai.vcruntime.nodes import NodeProcess

READ_CHUNK = 64 * 1024
OUTPUT_GRACE_S = 2.0  # after the command exits, for output a leftover child keeps open


@dataclass(frozen=True, slots=True)
class ExecOptions:
    argv: Sequence[str]
    stdin: bool = False  # the client sends standard input (else the command reads EOF)
    tty: bool = False
    rows: int = 24
    cols: int = 80
    term: str = "xterm"


class NodeCommand:
    """One running command: its output descriptors, its input, its pid file descriptor."""

    def __init__(self, proc: NodeProcess, outputs: list[tuple[int, int]], stdin: int | None):
        self.proc = proc
        self.outputs = outputs  # (fd, channel): channel 1 stdout, 2 stderr
        self._stdin = stdin
        self._master: int | None = None
        self._pidfd = os.pidfd_open(proc.pid)

    @classmethod
    def start(cls, runtime: VcRuntime, target: ExecTarget, options: ExecOptions) -> NodeCommand:
        """Start the command (blocking: call it from a worker thread)."""
        if options.tty:
            master, slave = os.openpty()
            try:
                _set_size(slave, options.rows, options.cols)
                proc = runtime.exec(
                    target.runtime_id, target.index, list(options.argv), cwd="/shared",
                    env={"TERM": options.term}, stdin=slave, stdout=slave, stderr=slave,
                    tty=True,
                )  # fmt: skip
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)  # else the master never reads EOF
            os.set_blocking(master, False)
            command = cls(proc, [(master, 1)], master)
            command._master = master
            return command
        proc = runtime.exec(
            target.runtime_id,
            target.index,
            list(options.argv),
            cwd="/shared",
            stdin=subprocess.PIPE if options.stdin else subprocess.DEVNULL,
        )
        outputs = [
            (pipe.fileno(), channel)
            for pipe, channel in ((proc.stdout, 1), (proc.stderr, 2))
            if pipe is not None
        ]
        stdin = proc.stdin.fileno() if proc.stdin is not None else None
        for fd in [*(fd for fd, _ in outputs), *([stdin] if stdin is not None else [])]:
            os.set_blocking(fd, False)
        return cls(proc, outputs, stdin)

    async def read(self, fd: int) -> bytes:
        """The next output from ``fd``, ``b""`` at its end."""
        while True:
            try:
                return os.read(fd, READ_CHUNK)
            except BlockingIOError:
                await _ready(fd, write=False)
            except OSError as exc:
                if exc.errno == errno.EIO:  # a terminal whose slave side is all closed
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        """Feed the command's input; dropped once the command closed it."""
        view = memoryview(data)
        while view and self._stdin is not None:
            try:
                view = view[os.write(self._stdin, view) :]
            except BlockingIOError:
                await _ready(self._stdin, write=True)
            except OSError:  # EPIPE: the command does not read any more
                self.close_stdin()

    def close_stdin(self) -> None:
        """EOF on the command's input; on a terminal, its EOF character (^D) instead."""
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")
            return
        if self._stdin is None:
            return
        self._stdin = None
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's new size; the kernel sends SIGWINCH to the command."""
        if self._master is not None:
            _set_size(self._master, rows, cols)

    async def wait(self) -> int:
        """The exit code once the command has ended (128+N when killed by signal N)."""
        if self.proc.poll() is None:
            await _ready(self._pidfd, write=False)
        code = self.proc.wait()
        return code if code >= 0 else 128 - code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        """Kill the command if it still runs, reap it, close every descriptor."""
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        os.close(self._pidfd)
        if self._master is not None:
            os.close(self._master)
            self._master = None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
