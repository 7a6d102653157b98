"""The web dashboard on a real server: first paint with 10,000 jobs stored, and screenshots.

Run: ``.venv/bin/python bench/web.py`` (``--screenshots docs/screenshots`` also writes
PNGs of the main pages; ``--jobs N`` changes the number of stored jobs; ``--only
notebooks,services`` writes only those screenshots).

It starts ``virtuai up`` in a temporary state directory on a free port of 127.0.0.1,
makes three tenants with quotas and users, runs a few real jobs (some succeed, one
fails, one runs, some wait for quota), and signs Debian's headless ``chromium`` in
(Playwright, no browser download).

First paint is measured from navigation to the first row of the jobs table, with the
session cookie already set (what a returning user sees), best of 5 (the server
and the browser warm): once with the few jobs above (the baseline), then again after
``--jobs`` more are stored (a held array: ``afterok`` on a job that sleeps, so the
control loop sees them pending at every tick).  The jobs are then cancelled (an array cancel) and
measured again: that is the common case, a long history of ended jobs.  The last line
is ``first_paint_ms=<ended> held_ms=<held> baseline_ms=<B> ratio=... held_ratio=...``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

PAGES = [
    ("jobs", "#/jobs", "#jobs-table tbody tr"),
    ("job", None, "#log"),
    ("submit", "#/submit", "#submit-form"),
    ("tenants", "#/tenants", "#fairshare table"),
    ("usage", "#/usage", "#usage-totals table"),
    ("nodes", "#/nodes", "main table"),
    ("vcs", "#/vcs", "#vcs-table table"),
    ("admin", "#/admin", "#admin-users table"),
    ("tokens", "#/tokens", "#tokens table, #tokens-unavailable"),
    # Bob's own (notebooks are per user); as root only (they run as the tenant's user).
    ("notebooks", "#/notebooks", "#notebooks-table [data-notebook='lab']"),
    ("services", "#/services/biology/iris", "#service-replicas table"),
]
MODEL = Path(__file__).parents[1] / "examples" / "services" / "iris" / "model.py"


def public_jupyter(directory: Path) -> Path | None:
    """A Python that tenant users can run, with this venv's JupyterLab (as the notebook
    tests make it): a venv of Debian's python3 reading this venv's site-packages."""
    system = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not system.exists():
        return None
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(directory)], check=True)
    site = next((directory / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p, "jupyterlab").is_dir()]
    (site / "virtuai-bench.pth").write_text("\n".join(ours) + "\n")
    return directory / "bin" / "python"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VIRTUAI_HOME": str(home / "home"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "VIRTUAI_WORKSPACES": str(home / "ws"),
            "VIRTUAI_LOCAL__CPU": "8",
            "VIRTUAI_LOCAL__MEMORY": "16Gi",
            "VIRTUAI_LOCAL__GPUS": '[{"model": "declared-a100", "memory": "80Gi"}]',
            "VIRTUAI_LOCAL__CGROUP_NAME": "virtuai-bench-web",
            "VIRTUAI_LOCAL__USER_PREFIX": "vaib-",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.5",
        }
        home.chmod(0o755)
        self.jupyter = public_jupyter(home / "jupyter")
        if self.jupyter is not None:
            self.env["VIRTUAI_NOTEBOOKS__PYTHON"] = str(self.jupyter)
        for name in ("VIRTUAI_TOKEN", "VIRTUAI_URL", "VIRTUAI_CONFIG"):
            self.env.pop(name, None)
        (home / "ws").mkdir(mode=0o755)
        # Jobs up to this id were submitted one by one (not in the big held arrays).
        self.last_single_job = 0
        self.home = home
        self.log = (home / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "virtuai", "up", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit("virtuai up did not start")
        config = Path(self.env["XDG_CONFIG_HOME"], "virtuai", "cli.yaml").read_text()
        found = re.search(r"vai_[A-Za-z0-9_-]{43}", config)
        assert found is not None
        self.admin = found.group(0)

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        for _ in range(30):
            response = httpx.request(
                method,
                f"{self.url}/api/v1{path}",
                headers={"Authorization": f"Bearer {token or self.admin}"},
                timeout=120,
                **kwargs,
            )
            # SQLite busy while the control loop writes a big batch: ask again.
            if response.status_code != 503:
                break
            time.sleep(1)
        if response.status_code >= 300:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def seed(server: Server, workloads_too: bool = False) -> dict[str, Any]:
    """Three tenants in a cohort, users, and real jobs in every state worth showing."""
    for name, cpu, memory, gpu in (
        ("physics", 4, "6Gi", 1),
        ("biology", 2, "4Gi", 0),
        ("chem", 2, "2Gi", 0),
    ):
        body = {"name": name, "quota": {"cpu": cpu, "memory": memory, "gpu": gpu}}
        server.call("POST", "/tenants", json={**body, "cohort": "lab"})
    tokens = {}
    for user, tenant in (("alice", "physics"), ("bob", "biology"), ("carol", "chem")):
        created = server.call("POST", "/users", json={"name": user, "tenant": tenant})
        tokens[user] = created["token"]

    def submit(user: str, command: str, **fields: Any) -> int:
        body = {"command": ["sh", "-c", command], **fields}
        body.setdefault("resources", {"cpu": 1, "memory": "256Mi"})
        job: dict[str, Any] = server.call("POST", "/jobs", tokens[user], json=body)
        server.last_single_job = max(server.last_single_job, int(job["id"]))
        return int(job["id"])

    train = "for e in 1 2 3; do echo epoch $e loss 0.$((9 - e * 2)); sleep 0.3; done; echo saved"
    for i in range(3):
        submit("alice", train, name=f"train-{i}")
        submit("bob", "echo aligning; sleep 0.5; echo done", name=f"align-{i}")
        submit("carol", "echo sim step; sleep 0.4", name=f"md-{i}")
    submit("bob", "echo oops >&2; exit 3", name="broken")
    # Wait for those to end, so that usage exists.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = server.call("GET", "/jobs")
        if all(j["state"] in {"succeeded", "failed"} for j in jobs):
            break
        time.sleep(0.3)
    running = submit(
        "alice",
        "for i in $(seq 1 600); do echo step $i; sleep 1; done",
        name="finetune",
        resources={"cpu": 2, "memory": "1Gi", "gpu": 1},
    )
    submit("alice", "sleep 600", name="sweep", resources={"cpu": 2, "memory": "4Gi"})
    submit("carol", "sleep 600", name="md-long", resources={"cpu": 2, "memory": "1Gi"})
    submit("carol", "sleep 600", name="md-queued", resources={"cpu": 2, "memory": "1Gi"})
    if workloads_too and server.jupyter is not None:
        workloads(server, tokens["bob"])  # biology has room left
    time.sleep(2)
    return {"tokens": tokens, "running": running}


def workloads(server: Server, bob: str) -> None:
    """A running notebook, a stopped one, and the example service with two replicas."""
    small = {"cpu": 0.5, "memory": "512Mi"}
    server.call("POST", "/notebooks", bob, json={"name": "scratch", "resources": small})
    server.call("DELETE", "/notebooks/scratch", bob)
    server.call("POST", "/notebooks", bob, json={"name": "lab", "resources": small})
    model = server.home / "model.py"
    shutil.copy(MODEL, model)
    model.chmod(0o644)
    service = {
        "name": "iris",
        "command": ["python3", str(model)],
        "env": {"MODEL_VERSION": "3"},
        "resources": {"cpu": 0.2, "memory": "128Mi"},
        "replicas": {"min": 2, "max": 4, "target_rps": 50},
        "readiness": {"path": "/healthz", "interval": 1},
    }
    server.call("POST", "/services", bob, json=service)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = server.call("GET", "/services/iris", bob)["ready"] == 2
        lab = server.call("GET", "/notebooks/lab", bob)["state"] == "running"
        if ready and lab:
            return
        time.sleep(0.5)


def stop_work(server: Server) -> None:
    """Cancel every job that may hold a process (supervisors outlive the server), by id,
    and wait until each has ended."""
    live = {"pending", "admitted", "starting", "running", "preempting"}
    for service in server.call("GET", "/services"):  # or it starts its replicas again
        server.call("DELETE", f"/services/{service['name']}", params={"tenant": service["tenant"]})
    ids = [j["id"] for j in server.call("GET", "/jobs", params={"limit": 10_000})]
    ids = [i for i in ids if i <= server.last_single_job]
    deadline = time.monotonic() + 120
    while ids and time.monotonic() < deadline:
        jobs = {i: server.call("GET", f"/jobs/{i}") for i in ids}
        # Ended means every task run has its outcome: a cancelled job's processes are
        # stopped by the control loop after the state changed.
        ids = [
            i
            for i, job in jobs.items()
            if job["state"] in live or any(t["outcome"] is None for t in job["task_runs"])
        ]
        for job_id in ids:
            if jobs[job_id]["state"] in live:
                server.call("POST", f"/jobs/{job_id}/cancel")
        time.sleep(1)
    if ids:
        print(f"warning: jobs {ids} did not end; their processes may still run", file=sys.stderr)


def sign_in(page: Page, url: str, token: str) -> Page:
    page.goto(url)
    page.fill("#token", token)
    page.click("form button[type=submit]")
    page.wait_for_selector("#logout")
    return page


def first_paint(page: Page, url: str, runs: int = 5) -> float:
    """Milliseconds from navigation to the first jobs row, best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        page.goto("about:blank")
        start = time.perf_counter()
        page.goto(f"{url}/#/jobs")
        page.wait_for_selector("#jobs-table tbody tr td a")
        best = min(best, (time.perf_counter() - start) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs stored for the measure")
    parser.add_argument("--screenshots", type=Path, help="write PNGs of the main pages here")
    parser.add_argument("--only", help="these screenshots only, e.g. notebooks,services")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: scripts/system-packages.sh")

    home = Path(tempfile.mkdtemp(prefix="vai-bench-web-"))
    server = Server(home)
    try:
        seeded = seed(server, workloads_too=args.screenshots is not None)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1360, "height": 820})
            page = sign_in(context.new_page(), server.url, server.admin)
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                only = set(args.only.split(",")) if args.only else None
                owner: Page | None = None  # notebooks and services: bob's own
                for name, route, ready in PAGES:
                    own = name in {"notebooks", "services"}
                    if (only is not None and name not in only) or (own and not server.jupyter):
                        continue
                    shot = page
                    if own:
                        if owner is None:
                            owner = sign_in(
                                browser.new_context(
                                    viewport={"width": 1360, "height": 820}
                                ).new_page(),
                                server.url,
                                seeded["tokens"]["bob"],
                            )
                        shot = owner
                    where = route or f"#/jobs/{seeded['running']}"
                    shot.goto(f"{server.url}/{where}")
                    shot.wait_for_selector(ready)
                    shot.wait_for_timeout(1500 if name in {"job", "usage", "services"} else 400)
                    shot.screenshot(path=str(args.screenshots / f"{name}.png"))
                    print(f"screenshot {args.screenshots / f'{name}.png'}", flush=True)
                if only is None or "login" in only:
                    login = browser.new_context(viewport={"width": 1360, "height": 600}).new_page()
                    login.goto(server.url)
                    login.wait_for_selector("#token")
                    login.screenshot(path=str(args.screenshots / "login.png"))
            baseline = first_paint(page, server.url)
            stored = len(server.call("GET", "/jobs", params={"limit": 10_000}))
            print(f"first paint, {stored} jobs stored: {baseline:.0f} ms (baseline)", flush=True)
            bob = seeded["tokens"]["bob"]
            gate = server.call(
                "POST",
                "/jobs",
                bob,
                json={
                    "command": ["sleep", "3600"],
                    "name": "gate",
                    "resources": {"cpu": 0.1, "memory": "32Mi"},
                },
            )
            server.last_single_job = int(gate["id"])
            started = time.perf_counter()
            arrays = []
            for first in range(0, args.jobs, 10_000):
                size = min(10_000, args.jobs - first)
                body = {
                    "command": ["true"],
                    "name": "held",
                    "array": f"0-{size - 1}",
                    "dependency": f"afterok:{gate['id']}",
                    "resources": {"cpu": 0.1, "memory": "32Mi"},
                }
                arrays.append(server.call("POST", "/jobs", bob, json=body)["array_id"])
            print(f"stored {args.jobs} more jobs in {time.perf_counter() - started:.1f} s")
            held = first_paint(page, server.url)
            total = stored + args.jobs + 1
            print(f"first paint, {total} jobs stored, {args.jobs} held pending: {held:.0f} ms")
            for array in arrays:
                server.call("POST", f"/arrays/{array}/cancel", bob)
            # Let the control loop record the 10,000 cancellations before measuring.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                params = {"state": "pending", "limit": 1}
                if not any(
                    server.call("GET", "/jobs", params={**params, "array_id": a}) for a in arrays
                ):
                    break
                time.sleep(1)
            finished = first_paint(page, server.url)
            print(f"first paint, {total} jobs stored, {args.jobs} of them ended: {finished:.0f} ms")
            browser.close()
        print(
            f"first_paint_ms={finished:.0f} held_ms={held:.0f} baseline_ms={baseline:.0f} "
            f"ratio={finished / baseline:.2f} held_ratio={held / baseline:.2f}"
        )
    finally:
        stop_work(server)
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
        if os.geteuid() == 0:
            for tenant in ("physics", "biology", "chem"):
                subprocess.run(["userdel", f"vaib-{tenant}"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
