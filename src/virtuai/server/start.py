"""``virtuai up`` starts here: settings, the one-server lock and the listening socket, then
the gate (``gate.py``) is served at once while another thread imports and builds the
platform (``up.py``'s ``compose``).

Only light modules are imported here (the settings, uvicorn, the standard library), so
that a restart after ``kill -9`` answers ``/healthz`` before the server's heavy modules
(FastAPI, SQLAlchemy's ORM, the drivers) are even loaded.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from virtuai.errors import ConfigurationError, VirtuaiError
from virtuai.proxy.fastpath import Switch, uvicorn_config
from virtuai.proxy.nginxfind import missing
from virtuai.server.gate import Gate, sqlite_health
from virtuai.server.gcsettle import settle as settle_gc
from virtuai.settings import ClusterSettings, ServerSettings, Settings

if TYPE_CHECKING:
    from virtuai.proxy.nginx import Nginx
    from virtuai.server.up import Platform
    from virtuai.server.workers import ApiWorkers

log = logging.getLogger("virtuai")
# How long a stop waits for a platform still being built (a database that does not answer).
_BUILD_JOIN_S = 60.0


def _given(**values: Any) -> dict[str, Any]:
    """The options given on the command line (the others keep the settings' values)."""
    return {key: value for key, value in values.items() if value is not None}


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str | None = None,
    home: Path | None = None,
    node: str | None = None,
    node_class: str | None = None,
    labels: dict[str, str] | None = None,
    address: str | None = None,
    proxy_engine: str | None = None,
    api_workers: str | None = None,
) -> None:
    cluster = _given(node=node, node_class=node_class, labels=labels, address=address)
    settings = Settings(**_given(host=host, port=port, database_url=database_url, home=home))
    if proxy_engine is not None:
        proxy = settings.proxy.model_copy(update={"engine": proxy_engine})
        settings = settings.model_copy(update={"proxy": proxy})
    if api_workers is not None:
        try:
            group = ServerSettings(api_workers=_workers_value(api_workers))
        except ValueError:
            print(
                f"virtuai up: --api-workers: a number from 1 to 64, or auto (not {api_workers!r})",
                file=sys.stderr,
            )
            sys.exit(2)
        settings = settings.model_copy(update={"server": group})
    if cluster:
        merged = settings.cluster.model_dump() | cluster
        settings = settings.model_copy(update={"cluster": ClusterSettings(**merged)})
    _configure_logging()
    settings = resolve_engine(settings, missing())
    try:
        with _single_server(settings.home):
            _serve(settings)
    except VirtuaiError as error:
        log.error("%s", error.message)
        sys.exit(1)


def _workers_value(text: str) -> int | str:
    return text if text == "auto" else int(text) if text.strip().isdigit() else text


SWITCH_INTERVAL_S = 0.001


def resolve_engine(settings: Settings, nginx_missing: str | None) -> Settings:
    """``proxy.engine: auto`` (the default): nginx in front when this machine can run it
    (``nginx_missing`` is None: ``proxy.nginxfind.missing``), else the builtin proxy,
    with a line saying why.  An explicit ``nginx`` or ``builtin`` is kept."""
    if settings.proxy.engine != "auto":
        return settings
    if nginx_missing is None and _api_workers(settings) > 1:
        # nginx in front asks the main process's own answers (``proxy.nginxauth``): API
        # workers would serve nothing, so a choice of them keeps the builtin proxy.
        nginx_missing = "server.api_workers asks for API worker processes"
    if nginx_missing is None:
        engine = "nginx"
        log.info("proxy.engine auto: nginx in front of the proxy")
    else:
        engine = "builtin"
        log.info("proxy.engine auto: the builtin proxy alone, because %s", nginx_missing)
    proxy = settings.proxy.model_copy(update={"engine": engine})
    return settings.model_copy(update={"proxy": proxy})


def _serve(settings: Settings) -> None:
    # The API's event loop, the group-commit writer and the control loops share the GIL.
    # Each SQLite call releases it, and taking it back from a thread that computes (a
    # scheduling pass) waits up to the switch interval, 5 ms by default: a submit makes
    # about ten such calls and hops between two threads.  1 ms bounds that wait; the
    # cost is more frequent switches between threads that compute.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Listen before anything is written: a busy port must fail here, not after the first
    # administrator was created and the CLI config of a running installation rewritten.
    nginx: Nginx | None = None
    if settings.proxy.engine == "nginx":
        # Imported only here: it reaches the proxy's heavy half (``proxy.peers``), which the
        # default engine imports after /healthz answers (``compose`` below).
        from virtuai.proxy.nginx import Nginx

        # nginx takes the public address; the server listens on a private loopback port.
        # A busy public address fails here, as without nginx, before anything is written.
        listen(settings.host, settings.port).close()
        listener = listen("127.0.0.1", 0)
        nginx = Nginx(
            settings.home,
            settings.host,
            settings.port,
            listener.getsockname()[1],
            lambda batch: built[0].count(batch) if built and built[0].count else None,
        )
    else:
        listener = listen(settings.host, settings.port)
    built: list[Platform] = []
    failed: list[BaseException] = []
    workers: list[ApiWorkers] = []

    def build() -> None:
        try:
            from virtuai.server.up import compose  # the heavy half, imported here

            platform = compose(settings, nginx=nginx)
            settle_gc()  # before the API opens: the start-up heap frozen (gcsettle.py)
            built.append(platform)
            switch.hook = platform.fast
            gate.app = platform.app
            started = start_workers(settings, platform, listener)
            if started is not None:
                workers.append(started)
        except BaseException as error:
            failed.append(error)
            gate.failed = True
            server.should_exit = True

    builder = threading.Thread(target=build, name="virtuai-start", daemon=True)
    # The build starts when uvicorn is about to serve (the gate's lifespan start-up).
    gate = Gate(sqlite_health(settings.effective_database_url), on_start=builder.start)
    switch = Switch()  # the proxy's fast path, hooked in once the platform is built
    config = uvicorn_config(gate, switch)
    server = uvicorn.Server(config)
    # uvicorn re-raises a SIGTERM it drained with the handler found before it: the
    # default one would end the process before the cleanup below, in every proxy engine
    # and with API workers (nginx stopped and its files, cached auth answers, removed; the
    # API workers stopped, finishing their requests; the platform's loops, leader lease,
    # proxy pools and database closed).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if nginx is not None:
            nginx.start()
        server.run(sockets=[listener])
    finally:
        if nginx is not None:
            nginx.stop()
        if builder.is_alive():
            builder.join(_BUILD_JOIN_S)
        for group in workers:  # before the platform: they finish their requests first
            group.stop()
        for platform in built:
            platform.stop()
    if failed:
        raise failed[0]


def _api_workers(settings: Settings) -> int:
    from virtuai.server.workers import worker_count

    dialect = "sqlite" if settings.effective_database_url.startswith("sqlite") else "other"
    return worker_count(settings.server.api_workers, dialect)


def start_workers(
    settings: Settings, platform: Platform, listener: socket.socket
) -> ApiWorkers | None:
    """The API worker processes of ``server.api_workers`` (``server/workers.py``), if more
    than the main process; None: the main process serves alone."""
    from virtuai.server.workers import ApiWorkers

    count = _api_workers(settings)
    if count <= 1 or platform.settings is None or platform.wake is None:
        if count > 1:  # nginx in front asks the main process's own answers (proxy.nginxauth)
            log.warning("server.api_workers is ignored with proxy.engine: nginx")
        return None
    workers = ApiWorkers(count, listener, platform.settings, platform.node, platform.wake)
    workers.start()
    log.info("the API is served by %d processes", count)
    return workers


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, as uvicorn would make it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        why = error.strerror or str(error)
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {why}; nothing was started or changed"
        ) from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _single_server(home: Path) -> Iterator[None]:
    """One server per state directory: two would launch the same work twice."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)  # mkdir does not change an existing directory's mode
    lock_path = home / "server.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Path(lock_path).read_text().strip() or "?"
            raise ConfigurationError(
                f"another virtuai server (pid {other}) is running with state in {home}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("VIRTUAI_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
