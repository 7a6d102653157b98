"""Several machines on one host: PostgreSQL on a bridge, and real ``virtuai up`` instances,
each in its own network namespace with its own address (used by tests and bench/failover.py).

    bridge vcpXXXXb  10.213.N.1/24   PostgreSQL listens here (and on 127.0.0.1)
      veth vcpXXXXv1 <-> eth0 in netns vcpXXXX-n1   10.213.N.11   virtuai up --node n1
      veth vcpXXXXv2 <-> eth0 in netns vcpXXXX-n2   10.213.N.12   virtuai up --node n2
      ...

``link(i, up=False)`` cuts a machine off the network (its veth goes down), ``kill``
sends a signal to its server, ``restart`` starts it again with the same state.
Jobs are real processes supervised by each instance's local driver; every
instance has its own home, cgroup and task directories.  Needs root and ``ip``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from support.postgres import PostgresServer, find_bindir, start_server, stop_server

API_PORT = 8642
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "preempted"}


def _brief(jobs: Any) -> list[tuple[Any, ...]]:
    return [(j["id"], j["state"], j["reason"][:120]) for j in jobs]


def can_run() -> str | None:
    """Why this host cannot run a NetCluster, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if find_bindir() is None:
        return "needs the PostgreSQL server binaries"
    return None


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


class Instance:
    def __init__(self, cluster: NetCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"n{index}"
        self.netns = f"{cluster.tag}-n{index}"
        self.veth = f"{cluster.tag}v{index}"
        self.address = f"{cluster.subnet}.{10 + index}"
        self.url = f"http://{self.address}:{API_PORT}"
        self.home = cluster.root / self.name
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.cut_off = False

    @property
    def reachable(self) -> bool:
        """Worth asking: a paused or cut-off instance would only time out."""
        return self.alive() and not self.paused and not self.cut_off

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "VIRTUAI_HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "xdg"),
            "VIRTUAI_WORKSPACES": str(self.cluster.public / "workspaces"),
            "VIRTUAI_LOCAL__CPU": "2",
            "VIRTUAI_LOCAL__MEMORY": "2Gi",
            "VIRTUAI_LOCAL__KILL_GRACE_S": "1",
            "VIRTUAI_LOCAL__USER_PREFIX": self.cluster.user_prefix,
            "VIRTUAI_LOCAL__CGROUP_NAME": f"virtuai-{self.netns}",
            "VIRTUAI_VCLUSTERS__ENABLED": "false",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
            "VIRTUAI_CLUSTER__NODE_LOST_S": str(self.cluster.node_lost_s),
            "VIRTUAI_CLUSTER__SELF_FENCE_S": str(self.cluster.node_lost_s / 2),
            "VIRTUAI_CONFIG": str(self.home / "none.yaml"),
            **self.cluster.extra_env,
        }
        for key in ("VIRTUAI_TOKEN", "VIRTUAI_URL", "VIRTUAI_DATABASE_URL"):
            env.pop(key, None)
        return env

    def start(self, wait: bool = True) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                *("ip", "netns", "exec", self.netns, sys.executable, "-m", "virtuai.server"),
                *("--host", "0.0.0.0", "--port", str(API_PORT), "--node", self.name),
                *("--address", self.address, "--database-url", self.cluster.database_url),
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            self.paused = sig == signal.SIGSTOP
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.process.wait(timeout=30)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def link(self, up: bool) -> None:
        _ip("link", "set", self.veth, "up" if up else "down")
        self.cut_off = not up

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.home / "server.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class NetCluster:
    def __init__(
        self,
        root: Path,
        size: int = 3,
        node_lost_s: float = 4.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.extra_env = extra_env or {}
        self.tag = f"vcp{secrets.token_hex(2)}"
        self.subnet = f"10.213.{secrets.randbelow(200) + 20}"
        self.bridge = f"{self.tag}b"
        # The tenants' Unix users are this cluster's own: users are global to the machine,
        # and another test run's cluster (or platform) must not delete the user whose
        # uid owns this cluster's workspaces, nor this one its.
        self.user_prefix = f"{self.tag}-"
        self.bridge_ip = f"{self.subnet}.1"
        self.node_lost_s = node_lost_s
        self.public = Path(root) / "public"
        self.instances = [Instance(self, i + 1) for i in range(size)]
        self.pg: PostgresServer | None = None
        self.database_url = ""
        self.admin_token = ""
        self.token = ""

    # -- set up and tear down ---------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.public.mkdir(mode=0o777, exist_ok=True)
        self.public.chmod(0o1777)
        self.root.chmod(0o755)
        self._network()
        bindir = find_bindir()
        assert bindir is not None
        self.pg = start_server(bindir, listen=self.bridge_ip, trust_net=f"{self.subnet}.0/24")
        self.database_url = (
            f"postgresql://virtuai@{self.bridge_ip}:{self.pg.port}/virtuai_test"
            "?target_session_attrs=read-write"
        )
        first, *others = self.instances
        first.start()
        config = yaml.safe_load((first.home / "xdg/virtuai/cli.yaml").read_text())
        self.admin_token = config["token"]
        for instance in others:
            instance.start(wait=False)
        for instance in others:
            instance.wait_healthy()
        self.admin("POST", "/api/v1/tenants", json={"name": "lab", "quota": {}})
        created = self.admin("POST", "/api/v1/users", json={"name": "ann", "tenant": "lab"})
        self.token = created["token"]

    def _network(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in self.instances:
            _ip("netns", "add", node.netns)
            _ip(
                "link",
                "add",
                node.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.netns,
            )
            _ip("link", "set", node.veth, "master", self.bridge, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cancel_all()
        for node in self.instances:
            if node.alive():
                with contextlib.suppress(Exception):
                    node.kill(signal.SIGCONT)
                    node.kill(signal.SIGKILL)
        self._kill_leftovers()
        for node in self.instances:
            _ip("link", "del", node.veth, check=False)
            _ip("netns", "del", node.netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        if self.pg is not None:
            stop_server(self.pg)
        subprocess.run(["userdel", f"{self.user_prefix}lab"], capture_output=True, check=False)
        for node in self.instances:
            cgroup = Path(f"/sys/fs/cgroup/virtuai-{node.netns}")
            with contextlib.suppress(OSError):
                for child in sorted(cgroup.glob("**/"), reverse=True):
                    child.rmdir()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Supervisors and tasks started by our instances (their task dirs are ours)."""
        root = str(self.root)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(root in part for part in proc.info["cmdline"] or []):
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            child.kill()
                    proc.kill()

    # -- the API ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, token: str, via: Instance | None = None, **kwargs: Any
    ) -> Any:
        """Through ``via``, else through the first instance that answers."""
        candidates = [via] if via is not None else [n for n in self.instances if n.reachable]
        last: Exception | None = None
        for node in candidates:
            try:
                response = httpx.request(
                    method,
                    f"{node.url}{path}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=3,
                    **kwargs,
                )
            except httpx.HTTPError as error:
                last = error
                continue
            assert response.status_code < 300, (response.status_code, response.text)
            return response.json()
        raise AssertionError(f"no instance answered {method} {path}: {last}")

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, token=self.admin_token, **kwargs)

    def user(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, token=self.token, **kwargs)

    def submit(self, command: list[str], via: Instance | None = None, **fields: Any) -> int:
        body = {"command": command, "resources": {"cpu": 0.5, "memory": "64Mi"}, **fields}
        job: dict[str, Any] = self.request(
            "POST", "/api/v1/jobs", token=self.token, via=via, json=body
        )
        return int(job["id"])

    def guarded(self, seconds: float, again: float | None = None) -> list[str]:
        """A command that runs ``seconds`` (``again`` in a requeued attempt) and records in
        ``overlaps`` if another attempt of the same job runs at the same time (it holds a
        lock named by the job)."""
        locks = self.public
        rerun = seconds if again is None else again
        return [
            "sh",
            "-c",
            f's={seconds}; [ "${{VIRTUAI_RESTART_COUNT:-0}}" -gt 0 ] && s={rerun}; '
            f"flock -n {locks}/job-$VIRTUAI_JOB_ID.lock sleep $s "
            f'|| echo "$VIRTUAI_JOB_ID" >> {locks}/overlaps',
        ]

    def overlaps(self) -> list[str]:
        path = self.public / "overlaps"
        return path.read_text().split() if path.exists() else []

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.user("GET", f"/api/v1/jobs/{job_id}")
        return job

    def nodes(self, via: Instance | None = None) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.request(
            "GET", "/api/v1/nodes", token=self.admin_token, via=via
        )
        return nodes

    def leader(self, timeout: float = 15.0, exclude: Instance | None = None) -> Instance:
        """The instance holding the lease, once one does (and is not ``exclude``)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AssertionError):
                for node in self.nodes():
                    if node["leader"]:
                        found = self.instances[int(node["name"][1:]) - 1]
                        if found is not exclude:
                            return found
            assert time.monotonic() < deadline, "no instance took the lease"
            time.sleep(0.1)

    def wait(
        self, job_ids: list[int], states: set[str] = FINISHED, timeout: float = 60.0
    ) -> dict[int, dict[str, Any]]:
        """Poll until every job is in one of ``states``; waiting for ``running``, a job that
        ended first is an error (with its reason)."""
        deadline = time.monotonic() + timeout
        jobs: dict[int, dict[str, Any]] = {}
        while True:
            with contextlib.suppress(AssertionError):  # no instance answered: retry
                jobs = {i: self.job(i) for i in job_ids}
            if jobs and all(j["state"] in states for j in jobs.values()):
                return jobs
            ended = [j for j in jobs.values() if j["state"] in FINISHED - states]
            if ended and not states & FINISHED:
                raise AssertionError(f"jobs ended before {states}: {_brief(ended)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {states}: {_brief(jobs.values())}")
            time.sleep(0.2)

    def cancel_all(self) -> None:
        active = [j["id"] for j in self.admin("GET", "/api/v1/jobs") if j["state"] not in FINISHED]
        for job_id in active:
            self.admin("POST", f"/api/v1/jobs/{job_id}/cancel")
        if active:
            self.wait(active, timeout=30)

    def duplicates(self, job_ids: list[int]) -> list[int]:
        """Jobs admitted more often than they had attempts, or that ended twice."""
        bad = []
        for job_id in job_ids:
            job = self.job(job_id)
            admitted = [e for e in job["events"] if e["to_state"] == "admitted"]
            ended = [e for e in job["events"] if e["to_state"] in FINISHED]
            requeues = [e for e in job["events"] if e["reason"].startswith("requeued")]
            if len(admitted) > len(requeues) + 1 or len(ended) > 1:
                bad.append(job_id)
        return bad
