"""How Slurm's commands are run: on this machine, or on a site's login node over SSH.

A transport runs one shell command line with optional stdin and returns its exit
status, stdout and stderr.  ``SshTransport`` keeps one authenticated connection
per site (asyncssh, on an event loop of its own thread), opens at most
``max_sessions`` channels on it at once, checks the login node's host key
against the known_hosts recorded when the site was added, and reconnects after a
failure with exponential backoff.  A failure to reach the login node is a
``SiteUnreachable``; a command that ran and failed is an ordinary result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh

from virtuai.drivers.base import TemporaryDriverError


class SiteUnreachable(TemporaryDriverError):
    """The site's login node (or its Slurm commands) cannot be reached now."""

    code = "site_unreachable"


@dataclass(frozen=True, slots=True)
class CommandResult:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace").strip()


class Transport(Protocol):
    def run(self, command: str, stdin: bytes | None = None, timeout: float = 60) -> CommandResult:
        """Run ``command`` (a shell command line) and wait for it."""
        ...

    def close(self) -> None: ...


class LocalTransport:
    """Slurm's commands on this machine (``site add --local``)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = {**os.environ, **(env or {})}

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 60) -> CommandResult:
        try:
            proc = subprocess.run(
                ["/bin/bash", "-c", command],
                input=stdin or b"",
                capture_output=True,
                timeout=timeout,
                env=self._env,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise SiteUnreachable(f"slurm command timed out after {timeout:g} s") from error
        except OSError as error:
            raise SiteUnreachable(f"cannot run slurm commands: {error}") from error
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SshTarget:
    user: str
    host: str
    port: int
    identity: str  # path of the private key, readable only by the server
    known_hosts: str  # the known_hosts lines recorded at `site add`

    @classmethod
    def parse(cls, login: str, identity: str, known_hosts: str) -> SshTarget:
        """``user@host[:port]``."""
        user, sep, rest = login.partition("@")
        if not sep or not user or not rest:
            raise ValueError("expected user@host[:port]")
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        if not host:
            host, port = rest, ""
        return cls(user, host, int(port) if port else 22, identity, known_hosts)


class SshTransport:
    """One reused SSH connection to a login node, at most ``max_sessions`` channels at once."""

    def __init__(
        self,
        target: SshTarget,
        *,
        max_sessions: int = 8,
        connect_timeout: float = 10.0,
        max_backoff_s: float = 15.0,
    ) -> None:
        self._target = target
        # asyncssh logs every channel at INFO: one line per Slurm command is noise here.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self._connect_timeout = connect_timeout
        self._max_backoff_s = max_backoff_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ssh-{target.host}", daemon=True
        )
        self._thread.start()
        self._sessions = max_sessions
        self._semaphore: asyncio.Semaphore | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""

    # -- public, thread-safe -----------------------------------------------------------------

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 60) -> CommandResult:
        future: Future[CommandResult] = asyncio.run_coroutine_threadsafe(
            self._run(command, stdin, timeout), self._loop
        )
        return future.result()

    def close(self) -> None:
        async def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                await self._conn.wait_closed()
                self._conn = None

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # -- on the loop ------------------------------------------------------------------------

    async def _run(self, command: str, stdin: bytes | None, timeout: float) -> CommandResult:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._sessions)
            self._connect_lock = asyncio.Lock()
        async with self._semaphore:
            conn = await self._connection()
            try:
                proc = await asyncio.wait_for(
                    conn.run(command, input=stdin or b"", encoding=None, check=False),
                    timeout=timeout,
                )
            except TimeoutError as error:
                raise SiteUnreachable(
                    f"{self._where()}: command timed out after {timeout:g} s"
                ) from error
            except (OSError, asyncssh.Error) as error:
                self._drop(conn, str(error) or type(error).__name__)
                raise SiteUnreachable(f"{self._where()}: {self._last_error}") from error
        status = proc.exit_status if proc.exit_status is not None else 255
        return CommandResult(status, _bytes(proc.stdout), _bytes(proc.stderr))

    async def _connection(self) -> asyncssh.SSHClientConnection:
        assert self._connect_lock is not None
        async with self._connect_lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            now = time.monotonic()
            if now < self._retry_at:
                wait = self._retry_at - now
                raise SiteUnreachable(
                    f"{self._where()}: {self._last_error} (next try in {wait:.0f} s)"
                )
            t = self._target
            try:
                self._conn = await asyncio.wait_for(
                    asyncssh.connect(
                        t.host,
                        port=t.port,
                        username=t.user,
                        client_keys=[t.identity],
                        known_hosts=asyncssh.import_known_hosts(t.known_hosts),
                        agent_path=None,
                        config=None,
                        keepalive_interval=15,
                        keepalive_count_max=3,
                    ),
                    timeout=self._connect_timeout,
                )
            except (OSError, asyncssh.Error, TimeoutError, ValueError) as error:
                self._drop(None, _describe(error))
                raise SiteUnreachable(f"{self._where()}: {self._last_error}") from error
            self._failures = 0
            return self._conn

    def _drop(self, conn: asyncssh.SSHClientConnection | None, why: str) -> None:
        if conn is not None:
            conn.close()
        self._conn = None
        self._failures += 1
        self._last_error = why
        backoff = min(self._max_backoff_s, 0.5 * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + (backoff if self._failures > 1 else 0)

    def _where(self) -> str:
        t = self._target
        return f"ssh {t.user}@{t.host}:{t.port}"


def _bytes(data: Any) -> bytes:
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return "host key not verifiable (does not match the known_hosts recorded at site add)"
    if isinstance(error, asyncssh.PermissionDenied):
        return "permission denied (the site's identity key is not accepted)"
    if isinstance(error, TimeoutError):
        return "connection timed out"
    return str(error) or type(error).__name__
