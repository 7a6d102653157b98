"""Inference services against a real ``virtuai up``: the example model
(``examples/services/iris/model.py``, a real HTTP server) run as replicas by the local
driver as the tenant's Unix user, reached only through the server's proxy.

One server is shared by the module; the tests run in order: two replicas are balanced
over, strangers are refused, a rolling ``apply`` under a client loop loses no request,
a replica that fails its readiness is restarted, a replica killed under a client loop
loses no request (retried on the other one), a ``min: 0`` service scales to zero and
a request wakes it (held, not failed), a ``target_rps`` service follows its load up and
down, a replica's port refuses every process but the server (other tenants' users and
its own tenant's; the guarded set survives a restart, stale ports dropped), bad
documents get a 4xx naming the field, and ``delete`` stops everything, with the
replicas' usage recorded as jobs' and their ports no longer guarded."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from support.platform import public_dir
from support.server import Server
from virtuai import portwire

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="replicas run as the tenant's Unix user"),
]
EXAMPLE = Path(__file__).parents[2] / "examples" / "services" / "iris"
IRIS = [6.3, 2.9, 5.6, 1.8]
# Tenants' Unix users of this run only: another run's teardown (the shared test prefix's
# `userdel`) would otherwise take the users whose uids own this run's workspaces.
PREFIX = f"vs{secrets.token_hex(2)}-"


@dataclass
class Svc:
    server: Server
    workspaces: Path
    model: Path
    alice: str
    bob: str
    carol: str
    files: Path = field(default_factory=Path)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    root = tmp_path_factory.mktemp("services")
    workspaces = public_dir("vai-svc-ws-")
    models = public_dir("vai-svc-model-")
    shutil.copy(EXAMPLE / "model.py", models / "model.py")
    (models / "model.py").chmod(0o644)
    server = Server(
        root / "home",
        root / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__USER_PREFIX": PREFIX,
            "VIRTUAI_LOCAL__KILL_GRACE_S": "3",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
            "VIRTUAI_SERVICES__RECONCILE_INTERVAL_S": "0.2",
            # target_rps follows a few seconds of load, and gives a replica back soon after.
            "VIRTUAI_SERVICES__RATE_WINDOW_S": "3",
            "VIRTUAI_SERVICES__SCALE_DOWN_DELAY_S": "2",
        },
    )
    server.start()
    server.cli("tenant", "create", "physics")
    server.cli("tenant", "create", "chem")
    lab = Svc(
        server,
        workspaces,
        models / "model.py",
        alice=_token(server, "alice", "--tenant", "physics"),
        bob=_token(server, "bob", "--tenant", "physics"),
        carol=_token(server, "carol", "--tenant", "chem"),
        files=root,
    )
    try:
        yield lab
    finally:
        services = (
            ("iris", lab.alice),
            ("cold", lab.alice),
            ("busy", lab.alice),
            ("limited", lab.alice),
            ("crashy", lab.alice),
            ("scaled", lab.alice),
            ("fixme", lab.alice),
            ("open", lab.carol),
        )
        for name, token in services:
            server.run("service", "delete", name, token=token)
        time.sleep(4)
        if server.process is not None and server.process.poll() is None:
            server.kill()
        table = re.search(r"nftables (virtuai_ports_\w+)", server.log.read_text())
        if table:  # the guard's table outlives its server: it is this test's to remove
            subprocess.run(["nft", "delete", "table", "inet", table.group(1)], check=False)
        shutil.rmtree(workspaces, ignore_errors=True)
        for tenant in ("physics", "chem"):
            subprocess.run(["userdel", PREFIX + tenant], capture_output=True, check=False)
        shutil.rmtree(models, ignore_errors=True)


def _token(server: Server, *args: str) -> str:
    return server.cli("user", "create", *args).splitlines()[0].strip()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _apply(lab: Svc, token: str, text: str, name: str = "svc.yaml") -> str:
    path = lab.files / name
    path.write_text(text)
    return lab.server.cli("apply", "-f", str(path), token=token)


def _iris_yaml(lab: Svc, version: str, replicas: str = "2", extra: str = "") -> str:
    return f"""
type: service
name: iris
command: [python3, {lab.model}]
env: {{MODEL_VERSION: "{version}", MODEL_LOAD_S: "0.5"}}
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: {replicas}
readiness: {{path: /healthz, interval: 1}}
{extra}
"""


def _show(lab: Svc, name: str, token: str) -> dict[str, Any]:
    shown: dict[str, Any] = lab.server.json("service", "show", name, token=token)
    return shown


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _predict(lab: Svc, token: str | None, path: str = "/svc/physics/iris/") -> httpx.Response:
    headers = {} if token is None else _bearer(token)
    return httpx.post(
        f"{lab.server.url}{path}predict", json={"features": IRIS}, headers=headers, timeout=30
    )


def test_replicas_are_balanced_and_reached_by_members_only(svc: Svc) -> None:
    out = _apply(svc, svc.alice, _iris_yaml(svc, "1"))
    assert out.strip() == f"service iris created: {svc.server.url}/svc/physics/iris/"
    _wait("two ready replicas", lambda: _show(svc, "iris", svc.alice)["ready"] == 2)
    shown = _show(svc, "iris", svc.alice)
    assert shown["url"] == f"{svc.server.url}/svc/physics/iris/"
    assert [r["state"] for r in shown["replicas"]] == ["running", "running"]

    # Round robin over both replicas; the prefix is stripped (the model serves /predict).
    replicas = Counter()
    for _ in range(10):
        answer = _predict(svc, svc.bob)  # another member of the tenant
        assert answer.status_code == 200, answer.text
        assert answer.json()["class"] == "virginica"
        replicas[answer.json()["replica"]] += 1
    assert set(replicas) == {str(r["job_id"]) for r in shown["replicas"]}
    assert sorted(replicas.values()) == [5, 5]

    assert _predict(svc, None).status_code == 401
    assert _predict(svc, svc.carol).status_code == 403  # another tenant's member
    missing = _predict(svc, svc.alice, "/svc/physics/nothing/")
    assert missing.status_code == 404
    assert _predict(svc, None, "/svc/physics/nothing/").status_code == 401  # tells nothing

    # The same document again changes nothing: no roll.
    assert _apply(svc, svc.alice, _iris_yaml(svc, "1")).startswith("service iris updated")
    assert _show(svc, "iris", svc.alice)["generation"] == 1
    shown_text = svc.server.cli("service", "show", "iris", token=svc.alice)
    assert "running" in shown_text
    # Its history, oldest first: created, two replicas started, both ready.
    first = shown["replicas"][0]["job_id"]
    assert "created by alice" in shown_text and f"replica job {first} ready" in shown_text

    # Replicas are jobs of kind service, run as the tenant's user, listed with the service.
    listed = svc.server.json("service", "list", token=svc.alice)
    assert [(s["name"], s["ready"], s["desired"]) for s in listed] == [("iris", 2, 2)]
    job = svc.server.json("job", str(shown["replicas"][0]["job_id"]), token=svc.alice)
    assert job["kind"] == "service"
    assert job["user"] == "alice"
    assert "loaded" in svc.server.cli("service", "logs", "iris", token=svc.alice)


def test_a_rolling_apply_loses_no_request(svc: Svc) -> None:
    before = {r["job_id"] for r in _show(svc, "iris", svc.alice)["replicas"]}
    results: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(headers=_bearer(svc.alice), timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.post(
                        f"{svc.server.url}/svc/physics/iris/predict", json={"features": IRIS}
                    )
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    continue
                version = answer.json().get("version", "") if answer.status_code == 200 else ""
                results.append((answer.status_code, version))

    clients = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        out = _apply(svc, svc.alice, _iris_yaml(svc, "2"))
        assert "rolling" in out

        def rolled() -> bool:
            shown = _show(svc, "iris", svc.alice)
            ids = {r["job_id"] for r in shown["replicas"]}
            return shown["ready"] == 2 and not ids & before and shown["generation"] == 2

        _wait("the replicas of generation 2 alone", rolled, timeout=120)
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    statuses = Counter(status for status, _ in results)
    versions = [v for _, v in results]
    assert not errors, errors[:5]
    assert statuses == {200: len(results)}, statuses
    assert len(results) > 50
    # Version 1 answered, then version 2, and never 1 again once the old replicas left.
    assert versions[0] == "1"
    assert versions[-1] == "2"
    last_old = max(i for i, v in enumerate(versions) if v == "1")
    assert set(versions[last_old + 1 :]) == {"2"}
    # The old replicas were stopped, drained (not failed).
    for job_id in before:
        job = svc.server.json("job", str(job_id), token=svc.alice)
        assert job["state"] == "cancelled", job


def test_a_replica_failing_readiness_is_restarted(svc: Svc) -> None:
    shown = _show(svc, "iris", svc.alice)
    # Make one replica sick: ask until the answer comes from some replica, then watch it.
    answer = httpx.post(
        f"{svc.server.url}/svc/physics/iris/sick", headers=_bearer(svc.alice), timeout=30
    )
    assert answer.status_code == 200
    sick = int(answer.json()["replica"])
    assert sick in {r["job_id"] for r in shown["replicas"]}

    def replaced() -> bool:
        now = _show(svc, "iris", svc.alice)
        ids = {r["job_id"] for r in now["replicas"]}
        return sick not in ids and now["ready"] == 2

    _wait("the sick replica replaced", replaced, timeout=60)
    job = svc.server.json("job", str(sick), token=svc.alice)
    assert job["state"] == "cancelled"
    events = " ".join(e["reason"] for e in job.get("events", []))
    assert "readiness failed" in events or "readiness failed" in job["reason"], job
    # Requests still succeed, from the replicas that are left.
    assert all(_predict(svc, svc.alice).status_code == 200 for _ in range(6))


def _replica_pid(job_id: int) -> int:
    """The process of a replica: the model's Python, with its job's id in its environment."""
    mark = f"VIRTUAI_JOB_ID={job_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"model.py" in cmdline and b"/bin/sh" not in cmdline and mark in environ.split(b"\0"):
            return int(proc.name)
    raise AssertionError(f"no process for replica {job_id}")


def test_a_replica_killed_loses_no_request(svc: Svc) -> None:
    """kill -9 of one of two replicas under a steady client: requests that found it gone
    go to the other one (and it is skipped until probed again); none fails."""
    _wait("two ready replicas", lambda: _show(svc, "iris", svc.alice)["ready"] == 2)
    shown = _show(svc, "iris", svc.alice)
    victim = int(shown["replicas"][0]["job_id"])
    pid = _replica_pid(victim)
    results: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(headers=_bearer(svc.alice), timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.get(f"{svc.server.url}/svc/physics/iris/")
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    continue
                results.append((answer.status_code, answer.text))

    clients = [threading.Thread(target=steady) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        before = len(results)
        os.kill(pid, signal.SIGKILL)
        time.sleep(4)  # longer than the route's cache: the crash is met, then dropped
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    failed = [r for r in results if r[0] != 200]
    assert not errors, errors[:5]
    assert not failed, (len(failed), failed[:3])
    assert before > 10 and len(results) > before + 50
    # The other replica answered after the kill; the crashed one is replaced.
    assert any(f'"replica": "{victim}"' not in text for _, text in results[before:])
    _wait("the killed replica replaced", lambda: _show(svc, "iris", svc.alice)["ready"] == 2)
    assert victim not in {r["job_id"] for r in _show(svc, "iris", svc.alice)["replicas"]}


# A replica that answers its probe and dies on any POST once it has read it: a crash
# while a request is in its hands.
CRASHER = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        os._exit(1)

HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_a_post_a_crashing_replica_broke_off_is_a_502_naming_it(svc: Svc) -> None:
    """Not retried (the replica may have acted on it, as nginx and Envoy reason): a 502
    that names the service and the replica, no traceback; a GET after it is served by
    the replica that replaces it."""
    script = svc.model.parent / "crasher.py"
    script.write_text(CRASHER)
    script.chmod(0o644)
    text = f"""
type: service
name: crashy
command: [python3, {script}]
resources: {{cpu: 0.2, memory: 128Mi}}
readiness: {{path: /, interval: 1}}
"""
    assert "created" in _apply(svc, svc.alice, text, "crashy.yaml")
    try:
        _wait("a ready replica", lambda: _show(svc, "crashy", svc.alice)["ready"] == 1)
        (replica,) = [r["job_id"] for r in _show(svc, "crashy", svc.alice)["replicas"]]
        logged = len(svc.server.log.read_bytes())
        answer = _predict(svc, svc.alice, "/svc/physics/crashy/")
        assert answer.status_code == 502, answer.text
        error = answer.json()
        assert error["code"] == "upstream_failed"
        assert f"service physics/crashy: replica job {replica}" in error["message"]
        assert "not sent again" in error["message"]
        assert "Traceback" not in answer.text
        assert "Traceback" not in svc.server.log.read_bytes()[logged:].decode()
        # A GET finds the crashed replica replaced (held until then, not failed).
        again = httpx.get(
            f"{svc.server.url}/svc/physics/crashy/", headers=_bearer(svc.alice), timeout=150
        )
        assert again.status_code == 200 and again.text == "ok"
    finally:
        svc.server.run("service", "delete", "crashy", token=svc.alice)


def _hammer(
    lab: Svc, path: str, results: list[tuple[int, str]], errors: list[str], stop: threading.Event
) -> None:
    """POST predictions through the proxy until ``stop``: (status, replica) of each."""
    with httpx.Client(headers=_bearer(lab.alice), timeout=30) as client:
        while not stop.is_set():
            try:
                answer = client.post(f"{lab.server.url}{path}predict", json={"features": IRIS})
            except httpx.HTTPError as error:
                errors.append(repr(error))
                continue
            replica = answer.json().get("replica", "") if answer.status_code == 200 else ""
            results.append((answer.status_code, replica or answer.text))


def test_a_replica_near_its_time_limit_is_replaced_before_it_losing_no_request(
    svc: Svc,
) -> None:
    """A 20 s time limit: the replacement starts half-way (the margin is at most half the
    limit), the old replica is drained once it is ready, and the limit ends a replica
    that no longer serves; a steady client sees every answer 200, from both replicas."""
    text = f"""
type: service
name: limited
command: [python3, {svc.model}]
env: {{MODEL_LOAD_S: "0.5"}}
resources: {{cpu: 0.2, memory: 128Mi}}
readiness: {{path: /healthz, interval: 1}}
time: 20s
"""
    assert "created" in _apply(svc, svc.alice, text, "limited.yaml")
    _wait("a ready replica", lambda: _show(svc, "limited", svc.alice)["ready"] == 1)
    (first,) = [r["job_id"] for r in _show(svc, "limited", svc.alice)["replicas"]]
    results: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_hammer, args=(svc, "/svc/physics/limited/", results, errors, stop))
        for _ in range(2)
    ]
    for thread in clients:
        thread.start()
    try:

        def first_ended() -> bool:
            job = svc.server.json("job", str(first), token=svc.alice)
            return job["state"] in ("cancelled", "timed_out", "failed", "succeeded")

        _wait("the first replica's end", first_ended, timeout=40)
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
        shown = _show(svc, "limited", svc.alice)
        svc.server.run("service", "delete", "limited", token=svc.alice)
    assert not errors, errors[:5]
    failed = [r for r in results if r[0] != 200]
    assert not failed, (len(failed), failed[:3])
    assert len(results) > 50
    replicas = [replica for _, replica in results]
    assert replicas[0] == str(first) and replicas[-1] != str(first)
    # Ended at (or drained before) its limit, not failed; its replacement serves alone.
    assert svc.server.json("job", str(first), token=svc.alice)["state"] in (
        "cancelled",
        "timed_out",
    )
    assert shown["ready"] == 1 and first not in {r["job_id"] for r in shown["replicas"]}


def test_scale_to_zero_and_a_cold_start_holds_the_request(svc: Svc) -> None:
    text = f"""
type: service
name: cold
command: [python3, {svc.model}]
env: {{MODEL_LOAD_S: "1"}}
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: {{min: 0, max: 2}}
readiness: {{path: /healthz, interval: 1}}
idle_timeout: 3s
"""
    assert "created" in _apply(svc, svc.alice, text, "cold.yaml")
    time.sleep(1.5)
    shown = _show(svc, "cold", svc.alice)
    assert shown["desired"] == 0 and shown["replicas"] == []

    # The first request starts a replica and waits for it to be ready.
    started = time.monotonic()
    answer = _predict(svc, svc.alice, "/svc/physics/cold/")
    held = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert held > 1.0  # the model takes a second to load: the request was held, not failed
    assert _show(svc, "cold", svc.alice)["ready"] == 1, _show(svc, "cold", svc.alice)

    # Idle for its timeout: back to zero replicas, the replica's job drained and cancelled.
    _wait("scaled to zero", lambda: _show(svc, "cold", svc.alice)["replicas"] == [], 60)
    answer = httpx.post(
        f"{svc.server.url}/svc/physics/cold/predict",
        json={"features": IRIS},
        headers=_bearer(svc.alice),
        timeout=150,
    )
    assert answer.status_code == 200, (answer.text, _show(svc, "cold", svc.alice))


def test_a_crash_loop_answers_at_once_and_a_fixed_spec_starts_at_once(svc: Svc) -> None:
    """The model not where the spec says: the request that wakes the service is answered
    503 with why (not held for the whole cold-start timeout), and replicas are started
    further and further apart; applying the fixed spec starts one without that wait."""
    broken = f"""
type: service
name: fixme
command: [python3, {svc.model}.missing]
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: {{min: 0, max: 1}}
"""
    _apply(svc, svc.alice, broken, "fixme.yaml")
    started = time.monotonic()
    answer = httpx.get(
        f"{svc.server.url}/svc/physics/fixme/", headers=_bearer(svc.alice), timeout=150
    )
    assert answer.status_code == 503, answer.text
    assert "ended before it was ready" in answer.text and "virtuai logs" in answer.text
    assert time.monotonic() - started < 60  # the cold-start timeout is 120 s
    _wait("a back-off", lambda: "starts in" in _show(svc, "fixme", svc.alice)["reason"])

    fixed = broken.replace(f"{svc.model}.missing", str(svc.model))
    _apply(svc, svc.alice, fixed, "fixme.yaml")
    started = time.monotonic()
    answer = httpx.get(
        f"{svc.server.url}/svc/physics/fixme/", headers=_bearer(svc.alice), timeout=150
    )
    assert answer.status_code == 200, (answer.text, _show(svc, "fixme", svc.alice))
    assert time.monotonic() - started < 30
    assert _show(svc, "fixme", svc.alice)["reason"] == ""
    svc.server.cli("service", "delete", "fixme", token=svc.alice)


def test_public_services_need_no_credentials(svc: Svc) -> None:
    text = f"""
type: service
name: open
command: [python3, {svc.model}]
resources: {{cpu: 0.2, memory: 128Mi}}
readiness: {{path: /healthz, interval: 1}}
auth: public
"""
    _apply(svc, svc.carol, text, "open.yaml")
    _wait("a ready replica", lambda: _show(svc, "open", svc.carol)["ready"] == 1)
    answer = _predict(svc, None, "/svc/chem/open/")
    assert answer.status_code == 200, answer.text
    # Alice (tenant physics) cannot see chem's service through the API.
    assert svc.server.run("service", "show", "open", "--tenant", "chem", token=svc.alice).returncode


def test_target_rps_follows_the_load_up_and_down(svc: Svc) -> None:
    text = f"""
type: service
name: busy
command: [python3, {svc.model}]
resources: {{cpu: 0.2, memory: 128Mi}}
replicas: {{min: 1, max: 2, target_rps: 5}}
readiness: {{path: /healthz, interval: 1}}
"""
    _apply(svc, svc.alice, text, "busy.yaml")
    _wait("one ready replica", lambda: _show(svc, "busy", svc.alice)["ready"] == 1)
    time.sleep(2)
    assert _show(svc, "busy", svc.alice)["desired"] == 1  # no load: its minimum
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:  # far above 5 requests/s per replica, for as long as it runs
        with httpx.Client(headers=_bearer(svc.alice), timeout=30) as client:
            while not stop.is_set():
                statuses[client.get(f"{svc.server.url}/svc/physics/busy/healthz").status_code] += 1
                time.sleep(0.01)

    clients = [threading.Thread(target=load) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        _wait("two ready replicas under load", lambda: _show(svc, "busy", svc.alice)["ready"] == 2)
        assert _show(svc, "busy", svc.alice)["desired"] == 2  # and never more than max
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert set(statuses) == {200}, statuses

    def back_to_one() -> bool:
        shown = _show(svc, "busy", svc.alice)
        return shown["desired"] == 1 and shown["ready"] == 1

    _wait("one replica again once the load stopped", back_to_one, timeout=30)
    assert _predict(svc, svc.alice, "/svc/physics/busy/").status_code == 200


def _guard_table(svc: Svc) -> str:
    found = re.search(r"nftables (virtuai_ports_\w+)", svc.server.log.read_text())
    assert found, "the server guards no port"
    return found.group(1)


def _guarded(svc: Svc) -> set[int]:
    out = subprocess.run(
        ["nft", "-j", "list", "set", "inet", _guard_table(svc), "ports"],
        capture_output=True,
        text=True,
        check=True,
    )
    items = json.loads(out.stdout)["nftables"]
    return {int(e) for item in items for e in item.get("set", {}).get("elem", [])}


def _ports(svc: Svc, name: str) -> dict[int, int]:
    """job id -> the port a replica of ``name`` listens on (read from the database)."""
    jobs = [r["job_id"] for r in _show(svc, name, svc.alice)["replicas"]]
    with sqlite3.connect(svc.server.home / "virtuai.db") as db:
        return {
            j: int(db.execute("SELECT master_port FROM jobs WHERE id = ?", (j,)).fetchone()[0])
            for j in jobs
        }


_CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")
    print(s.recv(12).decode())
except OSError as e:
    print(type(e).__name__)
"""


def _connect_as(user: str, port: int) -> str:
    uid = pwd.getpwnam(user).pw_uid
    out = subprocess.run(
        ["/usr/bin/python3", "-c", _CONNECT, str(port)],
        user=uid,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def test_a_replicas_port_is_reached_through_the_server_only(svc: Svc) -> None:
    ports = _ports(svc, "iris")
    assert len(ports) == 2
    assert all(30000 <= p <= 32767 for p in ports.values())  # the range reserved for replicas
    assert set(ports.values()) <= _guarded(svc)
    assert _predict(svc, svc.alice).status_code == 200  # through the proxy (the server)
    for port in ports.values():
        # Another tenant's user (chem's replica runs as it), the tenant's own user (its
        # other jobs and notebooks: they reach it through the proxy like anyone), a stranger.
        for user in (f"{PREFIX}chem", f"{PREFIX}physics", "nobody"):
            assert _connect_as(user, port) == "ConnectionRefusedError", (user, port)
        assert _connect_as("root", port) == "HTTP/1.0 200"  # the server's user
    assert svc.server.json("doctor")["services_isolated"] is True  # as the administrator
    # port-forward goes through the server too: still open to the tenant's members.
    job_id, port = next(iter(ports.items()))
    url = svc.server.url.replace("http", "ws") + f"/api/v1/jobs/{job_id}/port-forward/ws"
    with connect(f"{url}?port={port}", additional_headers=_bearer(svc.bob)) as ws:
        ws.send(portwire.frame(portwire.DATA, b"GET /healthz HTTP/1.0\r\n\r\n"))
        ws.send(portwire.frame(portwire.EOF))
        channel, payload = portwire.split(bytes(ws.recv(timeout=30)))
    assert channel == portwire.DATA and payload.startswith(b"HTTP/1.0 200"), payload


def test_a_restart_keeps_the_live_ports_guarded_and_drops_stale_ones(svc: Svc) -> None:
    live = set(_ports(svc, "iris").values())
    stale = next(p for p in range(32767, 30000, -1) if p not in _guarded(svc))
    subprocess.run(
        ["nft", "add", "element", "inet", _guard_table(svc), "ports", f"{{ {stale} }}"],
        check=True,
    )
    svc.server.kill()
    svc.server.start()
    _wait("the stale port dropped", lambda: stale not in _guarded(svc), timeout=30)
    assert live <= _guarded(svc)
    assert _predict(svc, svc.alice).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "command": []}, "command"),
        ({"name": "x", "command": ["a"], "replicas": {"min": 3, "max": 1}}, "replicas"),
        ({"name": "x", "command": ["a"], "replicas": -1}, "replicas"),
        ({"name": "x", "command": ["a"], "port": 80}, "port"),  # fixed ports: above 1024
        ({"name": "x", "command": ["a"], "port": 40000}, "port"),  # not ephemeral
        ({"name": "x", "command": ["a"], "readiness": {"path": "health"}}, "readiness.path"),
        ({"name": "x", "command": ["a"], "auth": "everyone"}, "auth"),
        ({"name": "x", "command": ["a"], "resources": {"memory": "lots"}}, "resources.memory"),
        ({"name": "x", "command": ["a"], "environment": "missing"}, "environment"),
        ({"name": "Bad Name", "command": ["a"]}, "name"),
    ],
)
def test_bad_documents_get_a_4xx_naming_the_field(
    svc: Svc, body: dict[str, Any], field: str
) -> None:
    answer = httpx.post(
        f"{svc.server.url}/api/v1/services",
        json={"type": "service", **body},
        headers=_bearer(svc.alice),
        timeout=30,
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert field in answer.text, answer.text


def test_service_scale_changes_the_replicas_not_the_generation(svc: Svc) -> None:
    _apply(svc, svc.alice, _iris_yaml(svc, "1", replicas="1").replace("name: iris", "name: scaled"))
    _wait("one replica", lambda: _show(svc, "scaled", svc.alice)["ready"] == 1)
    said = svc.server.cli("service", "scale", "scaled", "--replicas", "2", token=svc.alice)
    assert "2-2 replicas" in said
    _wait("two replicas", lambda: _show(svc, "scaled", svc.alice)["ready"] == 2)
    shown = _show(svc, "scaled", svc.alice)
    assert shown["generation"] == 1 and shown["spec"]["env"]["MODEL_VERSION"] == "1"
    svc.server.cli("service", "scale", "scaled", "--min", "0", "--max", "3", token=svc.alice)
    shown = _show(svc, "scaled", svc.alice)
    assert (shown["replicas_min"], shown["replicas_max"], shown["generation"]) == (0, 3, 1)
    both = svc.server.run("service", "scale", "scaled", "--replicas", "1", "--max", "2")
    assert both.returncode != 0 and "--replicas" in both.stderr
    svc.server.cli("service", "delete", "scaled", token=svc.alice)


def test_the_cli_names_a_bad_field(svc: Svc) -> None:
    path = svc.files / "bad.yaml"
    path.write_text("type: service\nname: x\ncommand: [a]\nreplicas: {min: 0, maxx: 2}\n")
    result = svc.server.run("apply", "-f", str(path), token=svc.alice)
    assert result.returncode != 0
    assert "maxx" in result.stderr and "Traceback" not in result.stderr


def _alice_jobs_accounted(svc: Svc) -> int:
    usage = svc.server.json("usage", "--tenant", "physics", token=svc.alice)
    return sum(int(row["jobs"]) for row in usage["rows"] if row["user"] == "alice")


def test_delete_stops_the_replicas_and_their_usage_is_recorded(svc: Svc) -> None:
    jobs = [r["job_id"] for r in _show(svc, "iris", svc.alice)["replicas"]]
    ports = set(_ports(svc, "iris").values())
    assert ports <= _guarded(svc)
    accounted = _alice_jobs_accounted(svc)
    assert "deleting" in svc.server.cli("service", "delete", "iris", token=svc.alice)
    _wait(
        "the service gone",
        lambda: svc.server.run("service", "show", "iris", token=svc.alice).returncode != 0,
    )
    for job_id in jobs:
        assert svc.server.json("job", str(job_id), token=svc.alice)["state"] == "cancelled"
    # Each replica is accounted as a job when it ends (other services' replicas may end too).
    assert _alice_jobs_accounted(svc) >= accounted + len(jobs)
    assert _predict(svc, svc.alice).status_code == 404
    # Their ports are no longer guarded (the next pass after their end).
    _wait("the ports released", lambda: not ports & _guarded(svc), timeout=30)
