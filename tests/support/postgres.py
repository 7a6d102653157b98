"""A throwaway PostgreSQL server for one test session, and fresh databases on it.

The server is the real thing (``initdb`` + ``pg_ctl``) on 127.0.0.1 with trust
authentication and ``fsync=off``, in a temporary directory removed afterwards.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.

Environment:
    VIRTUAI_TEST_POSTGRES_URL  use this server instead of starting one (a superuser URL)
    VIRTUAI_PG_BINDIR          where initdb/pg_ctl/postgres are (default: found)
    VIRTUAI_REQUIRE_POSTGRES=1 fail, rather than skip, when no server can be had
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

SUPERUSER = "virtuai"
SESSION_DATABASE = "virtuai_test"
_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailableError(Exception):
    """PostgreSQL is not installed here (the reason is the message): skip, or fail if required."""


class PostgresStartError(RuntimeError):
    """PostgreSQL is installed but would not start: always an error."""


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates: list[str] = []
    if os.environ.get("VIRTUAI_PG_BINDIR"):
        candidates.append(os.environ["VIRTUAI_PG_BINDIR"])
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(out.stdout.strip())
    versioned = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
    candidates += sorted(versioned, key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        bindir = Path(candidate)
        if all(os.access(bindir / name, os.X_OK) for name in _BINARIES):
            return bindir
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


@dataclass
class PostgresServer:
    """A running server; ``url`` is a superuser URL to its session database."""

    bindir: Path
    root: Path
    port: int
    run_as: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{SESSION_DATABASE}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        # cwd: PostgreSQL's tools fail if they cannot read the current directory.
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kwargs,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def start_server(
    bindir: Path, *, attempts: int = 5, listen: str = "127.0.0.1", trust_net: str | None = None
) -> PostgresServer:
    """initdb into a fresh temporary directory and start a server on a free port.

    ``listen`` is the address to listen on (besides 127.0.0.1); ``trust_net`` a network
    (CIDR) whose clients are trusted, e.g. network namespaces on a test bridge."""
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailableError(
                "running as root and there is no 'postgres' user to run the server as"
            ) from None
    # Directly under the temp dir: short (unix socket paths are limited to ~107
    # bytes) and reachable by the postgres user, unlike pytest's 0700 root dirs.
    root = Path(tempfile.mkdtemp(prefix="virtuai-pg-"))
    if run_as is not None:
        os.chown(root, run_as.pw_uid, run_as.pw_gid)
    server = PostgresServer(bindir=bindir, root=root, port=0, run_as=run_as)
    try:
        done = server.run(
            "initdb",
            "--pgdata",
            str(server.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        if done.returncode != 0:
            raise PostgresStartError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        base_conf = (server.data_dir / "postgresql.conf").read_text()
        if trust_net is not None:
            with (server.data_dir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trust_net} trust\n")
        for _ in range(attempts):
            server.log_file.unlink(missing_ok=True)  # judge each attempt by its own log
            server.port = _free_port()
            _write_conf(server, base_conf, listen)
            done = server.run(
                "pg_ctl", "--pgdata", str(server.data_dir), "--log", str(server.log_file),
                "--wait", "--timeout", "60", "start",
            )  # fmt: skip
            if done.returncode == 0:
                break
            if "could not bind" not in server.log_tail(100):
                raise PostgresStartError(
                    f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{server.log_tail()}"
                )
        else:
            raise PostgresStartError(f"no free port after {attempts} attempts")
        _execute(_with_database(server.url, "postgres"), _create(SESSION_DATABASE))
    except BaseException:
        stop_server(server)
        raise
    return server


def _write_conf(server: PostgresServer, base_conf: str, listen: str = "127.0.0.1") -> None:
    addresses = "127.0.0.1" if listen == "127.0.0.1" else f"127.0.0.1,{listen}"
    settings = {
        "listen_addresses": f"'{addresses}'",
        "port": str(server.port),
        "unix_socket_directories": f"'{server.root}'",
        "max_connections": "200",
        # Throwaway data: durability buys nothing and costs most of the time.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
    conf = server.data_dir / "postgresql.conf"
    conf.write_text(base_conf + "\n# virtuai test server\n" + extra)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_server(server: PostgresServer) -> None:
    """Stop the server (immediately: the data is thrown away) and remove its directory."""
    if (server.data_dir / "postmaster.pid").exists():
        server.run("pg_ctl", "--pgdata", str(server.data_dir), "--mode", "immediate", "stop")
    shutil.rmtree(server.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_session_url() -> Iterator[str]:
    """Yield a superuser URL for the session: the given server, or one started here.

    Raises PostgresUnavailableError when there is neither (the caller skips, or fails if
    required), PostgresStartError when the server would not start.
    """
    external = os.environ.get("VIRTUAI_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailableError(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install "
            "them (Debian: postgresql), or set VIRTUAI_PG_BINDIR or VIRTUAI_TEST_POSTGRES_URL"
        )
    server = start_server(bindir)
    try:
        yield server.url
    finally:
        stop_server(server)


@contextlib.contextmanager
def fresh_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Create a database ``test_<random>`` on the server, empty or a copy of ``template``
    (a database nobody is connected to); drop it afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    url = create_database(server_url, name, template)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    # FORCE: a test that leaked a connection must not leak the database too.
    _execute(
        _with_database(server_url, "postgres"),
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
    )


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """Create a database ``name``, empty or a copy of ``template`` (the caller drops it);
    its URL."""
    create = _create(name)
    if template is not None:
        create = create + sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    _execute(_with_database(server_url, "postgres"), create)
    return _with_database(server_url, name)


def _with_database(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


def _create(name: str) -> sql.Composed:
    return sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))


def _execute(url: str, query: sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=30) as conn:
        conn.execute(query)
