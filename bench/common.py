"""What the server benchmarks share: a real ``virtuai up`` in a temporary home, a
keep-alive HTTP client, percentiles and CPU/RSS readings from ``/proc``.

Nothing here is mocked: the server is the same process a user starts, over
SQLite in its own state directory, on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VIRTUAI = [sys.executable, "-m", "virtuai"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Http:
    """One keep-alive connection, as a real client holds it; JSON in and out."""

    def __init__(self, port: int, token: str) -> None:
        self._port = port
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self._conn.request(method, path, body=data, headers=self._headers)
                response = self._conn.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {answer}")
        return answer

    def close(self) -> None:
        self._conn.close()


class VirtuaiServer:
    """``virtuai up`` in a temporary home with its own CLI config; removed at ``stop``."""

    def __init__(self, extra_env: dict[str, str] | None = None, root: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vai-bench-", dir=root))
        self.root.chmod(0o755)
        self.home = self.root / "home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VIRTUAI_HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "VIRTUAI_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.env.pop("VIRTUAI_TOKEN", None)
        self.env.pop("VIRTUAI_URL", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.ready_s = 0.0

    def start(self, timeout: float = 60) -> float:
        """Start and wait for ``/healthz``, then ``/readyz`` (the API up); return the seconds
        to ``/healthz`` (``ready_s`` keeps the seconds to ``/readyz``)."""
        started = time.monotonic()
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [*VIRTUAI, "up", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "server.log").read_text())
            if self._healthy():
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("virtuai up did not become healthy")
        elapsed = time.monotonic() - started
        # Servers before the gate (server/gate.py) have no /readyz: their /healthz is both.
        while self._healthy("/readyz") is False:
            if time.monotonic() - started > timeout:
                raise RuntimeError("virtuai up did not become ready")
            time.sleep(0.05)  # each answer costs the starting server a little CPU
        self.ready_s = time.monotonic() - started
        config = (self.root / "config" / "virtuai" / "cli.yaml").read_text()
        self.token = next(
            line.split(":", 1)[1].strip()
            for line in config.splitlines()
            if line.startswith("token")
        )
        return elapsed

    def _healthy(self, path: str = "/healthz") -> bool | None:
        """200: ``True``; another answer: ``False``; 404 (no such path): ``None``."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return None if status == 404 else status == 200

    def http(self, token: str | None = None) -> Http:
        return Http(self.port, token or self.token)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)

    def setup_user(self, tenant: str = "bench", user: str = "bench") -> str:
        """A tenant without quota and a member in it; return the member's token."""
        admin = self.http()
        admin.ok("POST", "/api/v1/tenants", {"name": tenant, "quota": {}})
        created = admin.ok("POST", "/api/v1/users", {"name": user, "tenant": tenant})
        admin.close()
        token: str = created["token"]
        return token

    # -- what the process costs ------------------------------------------------------------

    def pids(self) -> list[int]:
        """The server's process and its API workers (``server.api_workers``)."""
        assert self.process is not None
        pids = [self.process.pid]
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    if b"virtuai.server.apiworker" in Path(f"/proc/{child}/cmdline").read_bytes():
                        pids.append(int(child))
                except OSError:
                    continue
        return pids

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(
                (int(x.split()[1]) / 1024 for x in status.splitlines() if x.startswith("VmRSS:")),
                0.0,
            )
        return total

    def wait_workers(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` processes serve (workers start after ``/readyz``) and listen."""
        deadline = time.monotonic() + timeout
        while len(self.pids()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.pids())} of {count} API processes")
            time.sleep(0.1)
        time.sleep(0 if count <= 1 else 5)  # their imports, before they accept


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
