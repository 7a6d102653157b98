"""nginx in front of ``virtuai up`` (``proxy.engine: nginx``, #10's option (c)).

nginx, a child of the server, listens on the public address; the server itself (API,
dashboard, its own proxy) listens on a private loopback port.  nginx passes every
request to the server unchanged, but for ``/user/`` and ``/svc/`` it first asks the
server (``auth_request`` to ``proxy.nginxauth``) whether it may pass the request to
the workload itself: yes for a plain idempotent request whose caller and route the
server's proxy has cached and admitted, for a workload on this machine; the answer
gives the workload's address and secret (``auth_request_set``), and nginx keeps it
``AUTH_CACHE_S`` (1 s) per credential, cookies and route, so a revoked credential or
a moved workload is seen by nginx at most that much later than by the builtin proxy.
Any other answer (no credential, another tenant, a cold start, another machine, a
WebSocket, a body) sends the request to the server's own proxy (``error_page`` to a
named location), which answers exactly as it does without nginx; so does a workload
nginx cannot reach (a GET sent again: only idempotent requests take nginx's path).

nginx reaches every workload through one ``upstream`` block whose peer is picked per
request by a few lines of Lua (``balancer_by_lua``, Debian's ``libnginx-mod-http-lua``)
from the auth answer's address: its keep-alive pool holds connections to any workload
(nginx keys them by the peer's address), so nothing is reloaded as workloads come and
go, and no idle client connection is ever closed by a reload.  A Lua header filter
drops any ``Set-Cookie`` of the platform's session cookie from the workload's answer,
by the builtin proxy's rule (``proxy.headers.sets_session``).

Requests nginx serves itself are counted from its access log, which the server reads
in bulk (``Counter``): the autoscaler's rate and
the notebooks' activity see them, as the auth answers are cached.

nginx runs with its workers as a user of their own, ``virtuai-nginx`` (made at the first
start), when the server is root: the replicas' port guard lets it through as it lets the
server (``host.portguard``), and its files (the auth cache, which holds workloads'
secrets, and the count log) are in a directory of its own, mode 0700.  It dies with
the server (``PR_SET_PDEATHSIG``), and a stale one left by a killed server is stopped
at the next start (its pid file).
"""

from __future__ import annotations

import collections
import contextlib
import grp
import logging
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from virtuai.domain.http import API_KEEP_ALIVE_S, HOP_BY_HOP, SESSION_COOKIE
from virtuai.domain.notebooks import AUTH_HEADER, SECRET_HEADER
from virtuai.errors import ConfigurationError
from virtuai.host.deathsignal import die_with_parent
from virtuai.proxy.nginxfind import MODULES_PACKAGE, find_binary, find_modules

log = logging.getLogger(__name__)

AUTH_CACHE_S = 1
AUTH_PATH = "/_virtuai/nginx-auth"
TOKEN_HEADER = "X-Virtuai-Nginx"
_START_S = 10.0
_OPEN_FILES = 2 * 4096 + 64  # worker_connections' two sides, and nginx's own files

_CONF = """# Written by virtuai up (proxy/nginx.py) at each start; edits are lost.
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
{modules}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  client_max_body_size 0;
  large_client_header_buffers 4 32k;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi; uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  proxy_cache_path {work}/auth levels=1 keys_zone=vai_auth:4m max_size=64m inactive=10s
    use_temp_path=off;
  # Idle connections to the API closed before the API closes them (API_KEEP_ALIVE_S).
  upstream vai_api {{ server {api}; keepalive 64; keepalive_timeout {api_keepalive}s; }}
  # Every workload, through one keep-alive pool: the peer is the auth answer's address,
  # picked per request (no reload as workloads come and go: a reload closes idle client
  # connections); nginx keys idle connections by the peer's address.  The server line is
  # a placeholder the balancer replaces.
  upstream vai_workloads {{
    server 127.0.0.1:9;
    balancer_by_lua_block {{
      local host, port = ngx.var.vai_upstream:match("^(.+):(%d+)$")
      local ok, err = require("ngx.balancer").set_current_peer(host, tonumber(port))
      if not ok then
        ngx.log(ngx.ERR, "virtuai: no workload peer: ", err)
        return ngx.exit(ngx.ERROR)
      end
    }}
    keepalive 128;
    keepalive_timeout 4s;
  }}
  map $http_upgrade $vai_connection {{ default upgrade; "" ""; }}
  # The route a request names, as the server's proxy parses it (proxy/routes.py).
  map $request_uri $vai_route {{ "~^(?<p>/(?:user|svc)/[^/?]+/[^/?]+/)" $p; default ""; }}
  # A service's replica serves at its root: its prefix is stripped, a notebook's is not.
  map "$vai_strip:$request_uri" $vai_path {{
    "~^1:/svc/[^/?]+/[^/?]+(?<rest>/.*)$" $rest;
    "~^0:(?<all>.*)$" $all;
  }}
  log_format vai_count '$vai_route $vai_job';
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_request_buffering off;
  proxy_read_timeout 3600s;
  proxy_send_timeout 3600s;
  server {{
    listen {listen} backlog=2048;
    # The server's own, and its proxy for all nginx does not take.
    location / {{
{to_api}
    }}
    location @vai_builtin {{
{to_api}
    }}
    # nginx's question to the server: public callers never reach it.
    location ^~ /_virtuai/ {{ return 404; }}
    location ~ ^/(user|svc)/ {{
      auth_request /_vai_auth;
      auth_request_set $vai_upstream $upstream_http_x_virtuai_upstream;
      auth_request_set $vai_secret $upstream_http_x_virtuai_secret;
      auth_request_set $vai_strip $upstream_http_x_virtuai_strip;
      auth_request_set $vai_as $upstream_http_x_virtuai_as;
      auth_request_set $vai_cookie $upstream_http_x_virtuai_cookie;
      auth_request_set $vai_job $upstream_http_x_virtuai_job;
      error_page 401 403 500 502 503 504 = @vai_builtin;
      access_log {work}/count.log vai_count buffer=64k flush=1s;
      proxy_pass http://vai_workloads$vai_path;
      # A workload must not sign its user out, or in as someone else: its Set-Cookie of the
      # platform's session cookie is dropped, by the builtin proxy's rule
      # (``proxy.headers.sets_session``: the name before the first "=", trimmed).
      header_filter_by_lua_block {{
        local set = ngx.header["Set-Cookie"]
        if set == nil then return end
        if type(set) == "string" then set = {{ set }} end
        local kept, dropped = {{}}, false
        for _, cookie in ipairs(set) do
          if cookie:match("^[^=]*"):match("^%s*(.-)%s*$") == "{session}" then
            dropped = true
          else
            kept[#kept + 1] = cookie
          end
        end
        if dropped then ngx.header["Set-Cookie"] = #kept > 0 and kept or nil end
      }}
      proxy_set_header Host $http_host;
      proxy_set_header Authorization "";
      proxy_set_header Cookie $vai_cookie;
      proxy_set_header Connection "";
{hop}
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header {secret_header} $vai_secret;
      proxy_set_header {auth_header} $vai_as;
    }}
    location = /_vai_auth {{
      internal;
      proxy_pass http://vai_api{auth_path};
      proxy_method GET;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Original-Uri $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Virtuai-Upgrade $http_upgrade;
      proxy_set_header X-Virtuai-Body "$http_content_length$http_transfer_encoding";
      proxy_set_header {token_header} {token};
      proxy_buffering on;  # nginx caches only what it buffers
      proxy_cache vai_auth;
      proxy_cache_valid 200 {ttl}s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie X-Accel-Expires Vary;
      proxy_cache_key "{key}";
    }}
  }}
}}
"""

# All that the answer depends on: what makes a request plain, the credential, the cookies
# passed on (the session's removed), the route.
_KEY = "|".join(
    (
        "$request_method",
        "$http_upgrade",
        "$http_content_length$http_transfer_encoding",
        "$http_x_virtuai_forwarded_by",
        "$http_authorization",
        "$http_cookie",
        "$vai_route",
    )
)

_TO_API = """      proxy_pass http://vai_api;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $vai_connection;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;"""


def render(
    *,
    listen: str,
    api: str,
    directory: Path,
    work: Path,
    token: str,
    user: str | None,
    modules: Iterable[Path] = (),
) -> str:
    hop = "\n".join(
        f'      proxy_set_header {name} "";'
        for name in sorted(HOP_BY_HOP - {"connection", "upgrade", "transfer-encoding"})
    )
    return _CONF.format(
        listen=listen,
        api=api,
        api_keepalive=API_KEEP_ALIVE_S - 1,
        dir=directory,
        work=work,
        token=token,
        user=f"user {user};" if user else "",
        to_api=_TO_API,
        hop=hop,
        secret_header=SECRET_HEADER,
        auth_header=AUTH_HEADER,
        token_header=TOKEN_HEADER,
        auth_path=AUTH_PATH,
        ttl=AUTH_CACHE_S,
        key=_KEY,
        session=SESSION_COOKIE,
        modules="\n".join(f"load_module {path};" for path in modules),
    )


def address(host: str, port: int) -> str:
    """A workload's address as nginx names it (the auth answer's, for the balancer)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


WORKER_USER = "virtuai-nginx"


def _worker_user() -> int:
    try:
        return pwd.getpwnam(WORKER_USER).pw_uid
    except KeyError:
        pass
    argv = ["useradd", "--system", "--user-group", "--no-create-home"]
    argv += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", WORKER_USER]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise ConfigurationError(f"cannot create nginx's user {WORKER_USER}: {done.stderr}")
    return pwd.getpwnam(WORKER_USER).pw_uid


def _pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    die_with_parent(signal.SIGTERM)
    # Room for its worker_connections (each proxied request holds two descriptors): a
    # user's session often starts with a soft limit of 1024, below them, and nginx warns.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Nginx:
    """nginx as a child of ``virtuai up``: started on the public address, in front of the
    server's private ``api`` address; ``count`` is called with how many requests nginx
    served per route prefix and job id (``Counter``, on its thread)."""

    def __init__(
        self,
        home: Path,
        host: str,
        port: int,
        api_port: int,
        count: Callable[[dict[tuple[str, int], int]], None],
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self._home = home / "nginx"
        self._host, self._port, self._api_port = host, port, api_port
        self._count = count
        self._process: subprocess.Popen[bytes] | None = None
        self._work: Path | None = None
        self._counter: Counter | None = None
        # When root: the workers' own user, which the replicas' port guard lets through
        # (``host.portguard``), made at the first start.
        self.worker_uid = _worker_user() if os.geteuid() == 0 else None

    def start(self) -> None:
        binary = find_binary()
        if binary is None:
            raise ConfigurationError(
                "proxy.engine is nginx but nginx is not installed (Debian: apt-get install "
                "nginx-light), or set proxy.engine: builtin"
            )
        modules = find_modules()
        if modules is None:
            raise ConfigurationError(
                f"proxy.engine is nginx but nginx's Lua module is not installed (Debian: "
                f"apt-get install {MODULES_PACKAGE}), or set proxy.engine: builtin"
            )
        self._home.mkdir(mode=0o700, exist_ok=True)
        self._stop_stale()
        user = None
        if os.geteuid() == 0:
            worker = pwd.getpwuid(self.worker_uid or 0)
            user = f"{worker.pw_name} {grp.getgrgid(worker.pw_gid).gr_name}"
            # The workers' own files (cached auth answers hold workloads' secrets); the last
            # start's, left by a kill -9, removed.
            with contextlib.suppress(OSError):
                shutil.rmtree((self._home / "work-path").read_text().strip())
            self._work = Path(tempfile.mkdtemp(prefix="virtuai-nginx-"))
            (self._home / "work-path").write_text(str(self._work))
            os.chown(self._work, worker.pw_uid, worker.pw_gid)
        else:
            self._work = self._home / "work"
            shutil.rmtree(self._work, ignore_errors=True)
            self._work.mkdir(mode=0o700)
        self._counter = Counter(self._work / "count.log", self._count, self._reopen)
        conf = self._write(user, modules)
        # nginx writes its pid file once its listening sockets are bound (a busy address
        # makes it exit instead): a connection alone may reach whoever holds the port.
        pidfile = self._home / "nginx.pid"
        pidfile.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self._home), "-e", str(self._home / "error.log")],
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,  # noqa: PLW1509 - before exec: dies with the server
        )
        deadline = time.monotonic() + _START_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(f"nginx did not start: {self._error_tail()}")
            with contextlib.suppress(OSError):
                pidfile.stat()
                host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
                host = "::1" if host == "::" else host
                socket.create_connection((host, self._port), timeout=1).close()
                log.info("nginx (pid %s) serves %s", self._process.pid, self._port)
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"nginx did not listen within {_START_S:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._counter is not None:
            self._counter.close()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)

    def _write(self, user: str | None, modules: list[Path]) -> Path:
        assert self._work is not None
        conf = self._home / "nginx.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                render(
                    listen=address(self._host, self._port),
                    api=address("127.0.0.1", self._api_port),
                    directory=self._home,
                    work=self._work,
                    token=self.token,
                    user=user,
                    modules=modules,
                )
            )
        conf.chmod(0o600)
        return conf

    def _reopen(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGUSR1)  # reopen the logs

    def _stop_stale(self) -> None:
        """An nginx left by a server killed before it could stop it (the death signal
        covers the common case; this one, a kill between fork and prctl)."""
        pidfile = self._home / "nginx.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self._home / "nginx.conf").encode() not in cmdline:
            return
        log.warning("stopping a stale nginx (pid %s)", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def _error_tail(self) -> str:
        try:
            return (self._home / "error.log").read_text()[-500:].strip()
        except OSError:
            return "(no error log)"


class Counter:
    """Reads nginx's access log (``<route> <job>`` per line, written by nginx in 64 KiB
    buffers at most 1 s late) every ``FLUSH_S`` on a thread of its own, and calls
    ``count({(route, job_id): requests})`` with what came since.  Read in bulk: a Python
    call per request (syslog datagrams were tried) cost the server as much CPU as
    proxying it, measured.  Past
    ``ROTATE_BYTES`` the log is renamed and nginx told to reopen it (``SIGUSR1``), the old
    one read to its end a round later and removed: nothing counted twice or lost."""

    FLUSH_S = 0.5
    ROTATE_BYTES = 8 * 2**20

    def __init__(
        self,
        path: Path,
        count: Callable[[dict[tuple[str, int], int]], None],
        reopen: Callable[[], None],
    ) -> None:
        self._path = path
        self._count = count
        self._reopen = reopen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtuai-nginx-count", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        old: tuple[Path, int] | None = None  # a rotated log still to read to its end
        while not self._stop.wait(self.FLUSH_S):
            lines: list[bytes] = []
            if old is not None:
                lines += self._read(*old)[0]
                old[0].unlink(missing_ok=True)
                old = None
            more, offset = self._read(self._path, offset)
            lines += more
            if offset > self.ROTATE_BYTES:
                rotated = self._path.with_suffix(".old")
                with contextlib.suppress(OSError):
                    self._path.rename(rotated)
                    self._reopen()
                    old, offset = (rotated, offset), 0
            if lines:
                batch: dict[tuple[str, int], int] = {}
                for line, requests in collections.Counter(lines).items():
                    route, _, job = line.decode("latin-1").partition(" ")
                    if route and job.isdigit():
                        batch[(route, int(job))] = requests
                try:
                    self._count(batch)
                except Exception:
                    log.exception("counting requests nginx served failed")

    @staticmethod
    def _read(path: Path, offset: int) -> tuple[list[bytes], int]:
        """Whole lines from ``offset``, and where the next read starts."""
        try:
            with path.open("rb") as log_file:
                log_file.seek(offset)
                data = log_file.read()
        except OSError:
            return [], offset
        end = data.rfind(b"\n") + 1
        return data[:end].splitlines(), offset + end

    def close(self) -> None:
        self._stop.set()
