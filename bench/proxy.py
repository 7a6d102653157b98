"""The notebook proxy against direct access, on one machine, in one run.

A real ``virtuai up`` starts a real JupyterLab notebook (the local driver, as
the tenant's user when root).  The same requests then go to Jupyter through
the proxy (``/user/bench/nb/...`` with a Bearer token) and straight to its
port (with the per-notebook secret the proxy would add, computed from the
installation's key), alternating in rounds so that both see the same noise:

* latency: ``GET api/status`` paced at 200 requests/s on one keep-alive
  connection per target, the two interleaved request by request (a direct one
  and a proxied one back to back, which goes first alternating), so that both
  meet the same moments of a loaded machine; ``proxy_added_p99_ms`` is the
  proxy's p99 minus direct p99;
* throughput: 8 closed-loop keep-alive clients for a few seconds on the same
  URL; ``proxy_throughput_ratio`` is proxy requests/s over direct requests/s;
* WebSocket: 2,000 ``kernel_info`` requests sent at once on a kernel's channel;
  ``ws_msgs_per_s`` is how many messages per second come back through the
  proxy (direct in the line above it);
* the paired difference: each proxied request less the direct one of the same tick;
* the server's CPU time per proxied request (its process's CPU during the proxy's
  throughput rounds, less what it spends idle in the direct rounds).

Usage: ``python bench/proxy.py [--seconds 2] [--rounds 5]``.  The last line is
``proxy_added_p99_ms=X proxy_throughput_ratio=R ws_msgs_per_s=N``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from common import VirtuaiServer, percentile

NAME = "nb"
RATE = 200.0
CLIENTS = 8
WS_REQUESTS = 2000


def jupyter_python(root: Path) -> str:
    """A Python with this venv's JupyterLab that the tenant's user can run."""
    if os.geteuid() != 0:
        return sys.executable
    venv = root / "jupyter-venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p, "jupyterlab").is_dir()]
    (site / "virtuai-bench.pth").write_text("\n".join(ours) + "\n")
    return str(venv / "bin" / "python")


class Target:
    """One way to reach the notebook: a port, a path prefix and the headers to send."""

    def __init__(self, label: str, port: int, prefix: str, headers: dict[str, str]) -> None:
        self.label, self.port, self.prefix, self.headers = label, port, prefix, headers

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, conn: http.client.HTTPConnection, path: str) -> int:
        conn.request("GET", self.prefix + path, headers=self.headers)
        response = conn.getresponse()
        response.read()
        return response.status


def paced_latencies(targets: list[Target], seconds: float) -> dict[str, list[float]]:
    """Each target at RATE requests/s, interleaved: at each tick one request to each, back to
    back, the first one alternating."""
    conns = {t.label: t.connection() for t in targets}
    samples: dict[str, list[float]] = {t.label: [] for t in targets}
    start = time.perf_counter()
    for i in range(int(seconds * RATE)):
        due = start + i / RATE
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        for target in targets if i % 2 == 0 else targets[::-1]:
            began = time.perf_counter()
            status = target.get(conns[target.label], "api/status")
            samples[target.label].append((time.perf_counter() - began) * 1000)
            assert status == 200, status
    for conn in conns.values():
        conn.close()
    return samples


def throughput(target: Target, seconds: float) -> float:
    counts = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    def run(slot: int) -> None:
        conn = target.connection()
        while time.perf_counter() < stop:
            assert target.get(conn, "api/status") == 200
            counts[slot] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def ws_rate(target: Target, kernel: str) -> float:
    """Messages relayed per second: WS_REQUESTS kernel_info requests sent at once, and every
    message until the last reply (each request gives a reply and two status messages; the
    shell channel and status messages are not under Jupyter's iopub rate limit)."""
    url = f"ws://127.0.0.1:{target.port}{target.prefix}api/kernels/{kernel}/channels"
    with connect(url, additional_headers=target.headers, open_timeout=30, max_size=None) as ws:
        session = uuid.uuid4().hex
        began = time.perf_counter()
        for _ in range(WS_REQUESTS):
            ws.send(json.dumps(_message(session, "kernel_info_request")))
        replies = received = 0
        while replies < WS_REQUESTS:
            message: dict[str, Any] = json.loads(ws.recv(timeout=120))
            received += 1
            if message["msg_type"] == "kernel_info_reply":
                replies += 1
        return received / (time.perf_counter() - began)


def _message(session: str, msg_type: str) -> dict[str, Any]:
    header = {
        "msg_id": uuid.uuid4().hex,
        "username": "bench",
        "session": session,
        "msg_type": msg_type,
        "version": "5.3",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {},
        "channel": "shell",
    }


def start_notebook(server: VirtuaiServer, token: str) -> tuple[int, int]:
    user = server.http(token)
    nb = user.ok("POST", "/api/v1/notebooks", {"name": NAME, "resources": {"cpu": 1}})
    job_id = int(nb["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, _ = user.call("GET", f"/user/bench/{NAME}/api/status")
        if status == 200:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(
            f"the notebook never answered: {user.call('GET', f'/api/v1/jobs/{job_id}')}"
        )
    user.close()
    spec = json.loads(next((server.home / "tasks").glob(f"{job_id}.*.0/spec.json")).read_text())
    return job_id, int(spec["env"]["MASTER_PORT"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and target")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    server = VirtuaiServer()
    workspaces = server.root / "workspaces"
    workspaces.mkdir(mode=0o755)
    server.env["VIRTUAI_WORKSPACES"] = str(workspaces)
    server.env["VIRTUAI_NOTEBOOKS__PYTHON"] = jupyter_python(server.root)
    server.env["VIRTUAI_LOCAL__USER_PREFIX"] = "vaib-"
    server.env["VIRTUAI_LOCAL__KILL_GRACE_S"] = "5"
    try:
        server.start()
        token = server.setup_user()
        job_id, port = start_notebook(server, token)
        key = (server.home / "job-token.key").read_bytes()
        secret = hmac.new(key, f"notebook:{job_id}.0".encode(), hashlib.sha256).hexdigest()
        prefix = f"/user/bench/{NAME}/"
        proxied = Target("proxy", server.port, prefix, {"Authorization": f"Bearer {token}"})
        direct = Target(
            "direct",
            port,
            prefix,
            {"X-Virtuai-Notebook-Secret": secret, "X-Virtuai-Auth": "bearer"},
        )
        paced_latencies([direct, proxied], 0.5)  # warm both paths (route cache, pools)

        lat: dict[str, list[float]] = {"direct": [], "proxy": []}
        rps: dict[str, list[float]] = {"direct": [], "proxy": []}
        cpu: dict[str, float] = {"direct": 0.0, "proxy": 0.0}
        for _ in range(args.rounds):
            for label, samples in paced_latencies([direct, proxied], args.seconds).items():
                lat[label] += samples
        for _ in range(max(2, args.rounds // 2)):
            for target in (direct, proxied):
                before = server.cpu_seconds()
                rps[target.label].append(throughput(target, args.seconds))
                cpu[target.label] += server.cpu_seconds() - before
        for label in ("direct", "proxy"):
            samples = lat[label]
            print(
                f"{label:6} at {RATE:.0f} req/s: n={len(samples)} "
                f"p50={percentile(samples, 50):.2f} "
                f"p99={percentile(samples, 99):.2f} ms; {CLIENTS} clients: "
                f"{max(rps[label]):.0f} req/s (rounds {', '.join(f'{r:.0f}' for r in rps[label])})"
            )
        # Each proxied request against the direct one of the same tick: what the proxy adds
        # when both meet the same machine, and how often the server alone was late.
        pairs = [p - d for p, d in zip(lat["proxy"], lat["direct"], strict=True)]
        print(
            f"paired (proxied - direct, same tick): p50={percentile(pairs, 50):.2f} "
            f"p90={percentile(pairs, 90):.2f} p99={percentile(pairs, 99):.2f} ms"
        )
        proxied_requests = sum(rps["proxy"]) * args.seconds
        per_request = (cpu["proxy"] - cpu["direct"]) / max(1.0, proxied_requests)
        print(f"server CPU per proxied request: {per_request * 1e6:.0f} us")

        kernel = server.http(token).ok("POST", f"{prefix}api/kernels")["id"]
        ws_direct = ws_rate(direct, kernel)
        ws_proxy = ws_rate(proxied, kernel)
        print(
            f"websocket: {WS_REQUESTS} kernel_info requests, messages relayed: "
            f"direct {ws_direct:.0f}/s, proxy {ws_proxy:.0f}/s"
        )

        added = percentile(lat["proxy"], 99) - percentile(lat["direct"], 99)
        ratio = max(rps["proxy"]) / max(rps["direct"])
        print(
            f"proxy_added_p99_ms={added:.2f} proxy_throughput_ratio={ratio:.2f} "
            f"ws_msgs_per_s={ws_proxy:.0f}"
        )
    finally:
        with_user = server.http(server.token)
        try:
            with_user.call("DELETE", f"/api/v1/notebooks/{NAME}?user=bench")
            deadline = time.monotonic() + 30  # its user goes once Jupyter has ended
            while time.monotonic() < deadline:
                if with_user.call("GET", f"/api/v1/notebooks/{NAME}?user=bench")[0] == 404:
                    break
                time.sleep(0.5)
        finally:
            with_user.close()
            server.stop()
            subprocess.run(["userdel", "vaib-bench"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
