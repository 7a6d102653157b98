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

Usage: ``python bench/proxy.py [--seconds 2] [--rounds 5] [--baseline-src DIR
[--baseline-engine builtin|nginx]] [--engine nginx]``.  ``--engine nginx`` starts a
second server of this tree with ``proxy.engine: nginx`` (nginx in front,
``proxy/nginx.py``), measured round by round in turn with the builtin one (this tree's
first server runs ``proxy.engine: builtin`` whatever the default); its line is
``nginx: ...`` (its CPU per request counts the server's process only, not nginx's).
``--baseline-src`` (e.g. the ``src`` of ``git archive main``) starts a second server
from that tree, with its own notebook, and measures it round by round in turn with
this one, so that both meet the same load (``--baseline-engine``: with that engine);
the load average is printed.  The last line is this tree's, with the engine
``virtuai up`` takes by default on this machine (``proxy.engine: auto``: nginx where
it and its Lua module are installed, which then is always measured, else the builtin):
``proxy_added_p99_ms=X proxy_throughput_ratio=R ws_msgs_per_s=N``; the other engine's
figures are the line before it (``builtin: ...`` or ``nginx: ...``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import statistics
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

from virtuai.proxy.nginxfind import missing

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


class Setup:
    """One tree's server with its notebook, reached directly and through the proxy."""

    def __init__(
        self, label: str, env: dict[str, str], user_prefix: str, *, reloads: bool = False
    ) -> None:
        self.label = label
        self.reloads = reloads
        self.user_prefix = user_prefix
        self.server = VirtuaiServer(env)
        workspaces = self.server.root / "workspaces"
        workspaces.mkdir(mode=0o755)
        self.server.env["VIRTUAI_WORKSPACES"] = str(workspaces)
        self.server.env["VIRTUAI_NOTEBOOKS__PYTHON"] = jupyter_python(self.server.root)
        self.server.env["VIRTUAI_LOCAL__USER_PREFIX"] = user_prefix
        self.server.env["VIRTUAI_LOCAL__KILL_GRACE_S"] = "5"
        self.lat: dict[str, list[float]] = {"direct": [], "proxy": []}
        self.rps: dict[str, list[float]] = {"direct": [], "proxy": []}
        self.cpu: dict[str, float] = {"direct": 0.0, "proxy": 0.0}
        self.token = ""

    def start(self) -> None:
        server = self.server
        server.start()
        self.token = token = server.setup_user()
        job_id, port = start_notebook(server, token)
        key = (server.home / "job-token.key").read_bytes()
        secret = hmac.new(key, f"notebook:{job_id}.0".encode(), hashlib.sha256).hexdigest()
        self.prefix = prefix = f"/user/bench/{NAME}/"
        self.proxied = Target("proxy", server.port, prefix, {"Authorization": f"Bearer {token}"})
        self.direct = Target(
            "direct",
            port,
            prefix,
            {"X-Virtuai-Notebook-Secret": secret, "X-Virtuai-Auth": "bearer"},
        )
        paced_latencies([self.direct, self.proxied], 0.5)  # warm both paths (caches, pools)
        if self.reloads:
            # An older tree's nginx engine reloads once to give the notebook's address a
            # keep-alive pool, closing idle client connections (which http.client does not
            # retry): past it first.
            time.sleep(2.5)
            paced_latencies([self.direct, self.proxied], 0.5)

    def latency_round(self, seconds: float) -> None:
        for label, samples in paced_latencies([self.direct, self.proxied], seconds).items():
            self.lat[label] += samples

    def throughput_round(self, seconds: float) -> None:
        for target in (self.direct, self.proxied):
            before = self.server.cpu_seconds()
            self.rps[target.label].append(throughput(target, seconds))
            self.cpu[target.label] += self.server.cpu_seconds() - before

    def report(self, seconds: float) -> tuple[float, float, float]:
        """Print this tree's figures; return (added p99, throughput ratio, paired p50)."""
        lat, rps = self.lat, self.rps
        for label in ("direct", "proxy"):
            samples = lat[label]
            print(
                f"[{self.label}] {label:6} at {RATE:.0f} req/s: n={len(samples)} "
                f"p50={percentile(samples, 50):.2f} "
                f"p99={percentile(samples, 99):.2f} ms; {CLIENTS} clients: "
                f"{max(rps[label]):.0f} req/s (rounds {', '.join(f'{r:.0f}' for r in rps[label])})"
            )
        # Each proxied request against the direct one of the same tick: what the proxy adds
        # when both meet the same machine, and how often the server alone was late.
        pairs = [p - d for p, d in zip(lat["proxy"], lat["direct"], strict=True)]
        print(
            f"[{self.label}] paired (proxied - direct, same tick): "
            f"p50={percentile(pairs, 50):.2f} "
            f"p90={percentile(pairs, 90):.2f} p99={percentile(pairs, 99):.2f} ms"
        )
        proxied_requests = sum(rps["proxy"]) * seconds
        per_request = (self.cpu["proxy"] - self.cpu["direct"]) / max(1.0, proxied_requests)
        print(f"[{self.label}] server CPU per proxied request: {per_request * 1e6:.0f} us")
        added = percentile(lat["proxy"], 99) - percentile(lat["direct"], 99)
        ratio = max(rps["proxy"]) / max(rps["direct"])
        print(
            f"[{self.label}] added p99 {added:.2f} ms, throughput ratio {ratio:.2f} "
            f"(best round each; median of rounds "
            f"{statistics.median(rps['proxy']) / statistics.median(rps['direct']):.2f})"
        )
        return added, ratio, percentile(pairs, 50)

    def websocket(self) -> tuple[float, float]:
        kernel = self.server.http(self.token).ok("POST", f"{self.prefix}api/kernels")["id"]
        return ws_rate(self.direct, kernel), ws_rate(self.proxied, kernel)

    def stop(self) -> None:
        with_user = self.server.http(self.server.token)
        try:
            with_user.call("DELETE", f"/api/v1/notebooks/{NAME}?user=bench")
            deadline = time.monotonic() + 30  # its user goes once Jupyter has ended
            while time.monotonic() < deadline:
                if with_user.call("GET", f"/api/v1/notebooks/{NAME}?user=bench")[0] == 404:
                    break
                time.sleep(0.5)
        finally:
            with_user.close()
            self.server.stop()
            subprocess.run(
                ["userdel", f"{self.user_prefix}bench"], capture_output=True, check=False
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and target")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="the src directory of another tree (e.g. a git archive of main): its server "
        "is measured too, round by round in turn with this one's",
    )
    parser.add_argument(
        "--engine",
        choices=["builtin", "nginx"],
        default="builtin",
        help="nginx: also a server of this tree with proxy.engine nginx, in the same rounds",
    )
    parser.add_argument(
        "--baseline-engine",
        choices=["builtin", "nginx"],
        default=None,
        help="the baseline tree's proxy.engine (default: its own default); nginx: a tree "
        "whose engine reloads nginx once per new workload address is waited past",
    )
    args = parser.parse_args()

    default = "nginx" if missing() is None else "builtin"
    setups = [Setup("this", {"VIRTUAI_PROXY__ENGINE": "builtin"}, "vaib-")]
    if args.engine == "nginx" or default == "nginx":
        setups.append(Setup("nginx", {"VIRTUAI_PROXY__ENGINE": "nginx"}, "vaid-"))
    if args.baseline_src is not None:
        baseline = {"PYTHONPATH": str(args.baseline_src.resolve())}
        if args.baseline_engine is not None:
            baseline["VIRTUAI_PROXY__ENGINE"] = args.baseline_engine
        reloads = args.baseline_engine == "nginx"
        setups.append(Setup("baseline", baseline, "vaic-", reloads=reloads))
    loads = [os.getloadavg()[0]]
    try:
        for setup in setups:
            setup.start()
        # Round by round in turn, the first alternating: both trees meet the same machine.
        for i in range(args.rounds):
            for setup in setups if i % 2 == 0 else setups[::-1]:
                setup.latency_round(args.seconds)
        loads.append(os.getloadavg()[0])
        for i in range(max(2, args.rounds // 2)):
            for setup in setups if i % 2 == 0 else setups[::-1]:
                setup.throughput_round(args.seconds)
        loads.append(os.getloadavg()[0])
        results = {setup.label: setup.report(args.seconds) for setup in setups}
        ws: dict[str, tuple[float, float]] = {}
        for setup in setups:
            ws[setup.label] = setup.websocket()
            print(
                f"[{setup.label}] websocket: {WS_REQUESTS} kernel_info requests, messages "
                f"relayed: direct {ws[setup.label][0]:.0f}/s, proxy {ws[setup.label][1]:.0f}/s"
            )
        print(f"load average (1 min) during the run: {', '.join(f'{x:.2f}' for x in loads)}")
        if args.baseline_src is not None:
            added, ratio, paired = results["baseline"]
            print(
                f"baseline: proxy_added_p99_ms={added:.2f} proxy_throughput_ratio={ratio:.2f} "
                f"paired_p50_ms={paired:.2f} ws_msgs_per_s={ws['baseline'][1]:.0f}"
            )
        engines = {"builtin": "this", "nginx": "nginx"}
        other = "builtin" if default == "nginx" else "nginx"
        if engines[other] in results:
            added, ratio, paired = results[engines[other]]
            print(
                f"{other}: proxy_added_p99_ms={added:.2f} proxy_throughput_ratio={ratio:.2f} "
                f"paired_p50_ms={paired:.2f} ws_msgs_per_s={ws[engines[other]][1]:.0f}"
            )
        print(f"the default engine here (proxy.engine auto): {default}")
        added, ratio, _paired = results[engines[default]]
        print(
            f"proxy_added_p99_ms={added:.2f} proxy_throughput_ratio={ratio:.2f} "
            f"ws_msgs_per_s={ws[engines[default]][1]:.0f}"
        )
    finally:
        for setup in setups:
            try:
                setup.stop()
            except Exception as error:  # the other tree's server is still stopped
                print(f"[{setup.label}] stopping: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
