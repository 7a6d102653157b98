"""``python -m virtuai.server.apiworker``: one API worker process of ``virtuai up``.

Started and supervised by the main process (``server/workers.py``), it serves the
REST API, the dashboard and the proxy on the main process's own listening socket
(inherited: the kernel hands each new connection to whichever process accepts it
first, so a process busy with a scheduling pass leaves the connection to another).
It runs no control loop, holds no lease and launches nothing; what it commits that
gives the loops work (a submit, a cold service) wakes the main process through a
datagram socket (``WakeSender``), and an auth change it commits bumps the counter
that every process's token cache checks (``services.tokencache``).

Of the loops it runs only what describes its own requests: its services' traffic,
published under a row of its own (the leader sums the rows), and its notebooks'
proxied activity (recorded forward only).

What the main process hands over comes on stdin as JSON (the settings may hold a
database password: never in the environment or the arguments, which other users
can read); the two sockets are inherited descriptors.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

import uvicorn

from virtuai import web
from virtuai.api.app import create_app, warm_routes
from virtuai.control.runner import LoopRunner
from virtuai.domain.clock import SystemClock
from virtuai.drivers.base import Driver
from virtuai.drivers.local.driver import LocalDriver
from virtuai.host.deathsignal import die_with_parent
from virtuai.proxy.fastpath import Switch, uvicorn_config
from virtuai.server.apiparts import api_context, proxy_front, share_generations
from virtuai.server.gate import Gate
from virtuai.server.gcsettle import settle as settle_gc
from virtuai.server.start import SWITCH_INTERVAL_S
from virtuai.server.up import vc_runtime
from virtuai.settings import Settings
from virtuai.store.db import create_db_engine, make_session_factory

log = logging.getLogger("virtuai")


class WakeSender(threading.Event):
    """``ApiContext.wake`` in a worker: ``set`` wakes the main process's loops.

    Never set here (``is_set`` stays False), so that every commit that gives the loops
    work sends its datagram; a full socket buffer means the main process has datagrams
    to read already, so one that does not fit is dropped."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def set(self) -> None:
        try:
            self._sock.send(b"w", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # the main process is gone: this process dies with it
            log.debug("wake not sent: %s", error)


def die_with_main(parent: int) -> None:
    """SIGTERM when the main process dies, even by kill -9 (``PR_SET_PDEATHSIG``)."""
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above: nobody would tell us
        sys.exit(0)


def serve(spec: dict[str, Any]) -> None:
    index = int(spec["index"])
    settings = Settings.model_validate(spec["settings"])
    listener = socket.socket(fileno=int(spec["listen_fd"]))
    wake = WakeSender(socket.socket(fileno=int(spec["wake_fd"])))
    share_generations(settings)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the main process

    clock = SystemClock()
    engine = create_db_engine(settings.effective_database_url)  # migrated by the main process
    sessions = make_session_factory(engine)
    # Read-only use: task logs and port-forwards (the launcher starts only at a launch).
    local = LocalDriver(settings.runtime_dir, settings.local, node_name=settings.cluster.node)
    drivers: dict[str, Driver] = {"local": local}
    vcs = vc_runtime(settings)
    context = api_context(settings, sessions, clock, drivers, vcs, spec.get("ports_problem"))
    context.wake = wake
    app = create_app(context)
    web.mount(app)
    warm_routes(app)  # not at the first request after a restart (api/app.py)
    node = str(spec["node"])
    parts = proxy_front(settings, sessions, clock, context, app, local, node, f"{node}/api{index}")
    runner = LoopRunner(
        [parts.board.publish, parts.activity.tick], settings.scheduler.interval_s, threading.Event()
    )
    settle_gc()  # the start-up heap frozen (gcsettle.py)
    switch = Switch()
    switch.hook = parts.proxy.fast
    # The main process's gate, open from the start: /readyz answers as /healthz, as there.
    gate = Gate()
    gate.app = parts.proxy
    config = uvicorn_config(gate, switch, lifespan="off")
    runner.start()
    log.info("API worker %d serving (pid %d)", index, os.getpid())
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        runner.stop()
        local.close()
        engine.dispose()


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    die_with_main(int(spec["parent"]))
    logging.basicConfig(
        level=os.environ.get("VIRTUAI_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[api{spec['index']}]: %(message)s",
    )
    serve(spec)


if __name__ == "__main__":
    main()
