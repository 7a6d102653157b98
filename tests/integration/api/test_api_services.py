"""Services through the API and the reconciler, on SQLite and PostgreSQL, with real replicas
(the example model, run by the local driver) probed over real HTTP: replicas come up
ready, the proxy's resolver balances over the ready ones only, a changed spec rolls to a
new generation, and delete stops everything."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from support.platform import Platform, public_dir
from virtuai.control.serving import ReconcilerConfig, ServiceReconciler
from virtuai.drivers.local.ports import port_listened
from virtuai.proxy.routes import parse_target
from virtuai.proxy.services import ServiceResolver, Traffic
from virtuai.services.serving import start_replica
from virtuai.store.db import read_session, transaction
from virtuai.store.models import JobRow, ServiceEventRow, ServiceRow
from virtuai.store.serviceevents import KEPT, record_service_event

MODEL = Path(__file__).parents[3] / "examples" / "services" / "iris" / "model.py"


def _reconciler(platform: Platform) -> ServiceReconciler:
    rules = platform.context.rules
    return ServiceReconciler(
        platform.sessions,
        platform.context.clock,
        ReconcilerConfig(job_token_key=b"k" * 32, drain_s=0, interval_s=0),
        lambda session, service, now: start_replica(session, service, rules, now),
        port_holder=platform.driver.port_holder,
    )


def _until(platform: Platform, loop: ServiceReconciler, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, "timed out"
        platform.tick()
        loop.tick()
        time.sleep(0.1)


def _delete(platform: Platform, loop: ServiceReconciler, token: str) -> None:
    """Delete the iris service and wait until it is gone."""
    platform.ok("DELETE", "/api/v1/services/iris", token)
    _until(
        platform,
        loop,
        lambda: platform.call("GET", "/api/v1/services/iris", token).status_code == 404,
    )


def _show(platform: Platform, token: str, name: str = "iris") -> dict[str, Any]:
    shown: dict[str, Any] = platform.ok("GET", f"/api/v1/services/{name}", token)
    return shown


def _spec(model: Path, version: str) -> dict[str, Any]:
    return {
        "type": "service",
        "name": "iris",
        "command": ["python3", str(model)],
        "env": {"MODEL_VERSION": version},
        "resources": {"cpu": 0.2, "memory": "128Mi"},
        "replicas": 2,
        "readiness": {"path": "/healthz", "interval": 1},
    }


def test_replicas_roll_and_are_resolved_when_ready(platform: Platform) -> None:
    models = public_dir("vai-svc-it-")
    model = models / "model.py"
    shutil.copy(MODEL, model)
    model.chmod(0o644)
    try:
        platform.tenant("physics")
        ada = platform.user("ada", "physics")
        created = platform.call("POST", "/api/v1/services", ada, json=_spec(model, "1"))
        assert created.status_code == 201, created.text
        assert created.json()["path"] == "/svc/physics/iris/"
        loop = _reconciler(platform)
        _until(platform, loop, lambda: _show(platform, ada)["ready"] == 2)

        resolver = ServiceResolver(Traffic())
        target = parse_target("/svc/physics/iris/predict")
        assert target is not None
        with read_session(platform.sessions) as session:
            route = resolver(session, target, b"k" * 32)
        assert route is not None and len(route.upstreams) == 2
        answers = {
            httpx.get(route.upstreams[i].url() + "/", timeout=10).json()["replica"]
            for i in range(2)
        }
        assert answers == {str(r["job_id"]) for r in _show(platform, ada)["replicas"]}

        # Same spec: nothing changes.  A new version: generation 2 replaces both.
        again = platform.ok("POST", "/api/v1/services", ada, json=_spec(model, "1"))
        assert (again["created"], again["rolled"], again["generation"]) == (False, False, 1)
        rolled = platform.ok("POST", "/api/v1/services", ada, json=_spec(model, "2"))
        assert rolled["rolled"] and rolled["generation"] == 2

        def only_new() -> bool:
            shown = _show(platform, ada)
            gens = [r["generation"] for r in shown["replicas"]]
            return gens == [2, 2] and shown["ready"] == 2

        _until(platform, loop, only_new)
        for replica in _show(platform, ada)["replicas"]:
            url = f"http://127.0.0.1:{_port(platform, replica['job_id'])}/"
            assert httpx.get(url, timeout=10).json()["version"] == "2"

        # Another tenant's member does not see it; delete stops the replicas.
        platform.tenant("chem")
        eve = platform.user("eve", "chem")
        hidden = platform.call("GET", "/api/v1/services/iris", eve, params={"tenant": "physics"})
        assert hidden.status_code == 404
        jobs = [r["job_id"] for r in _show(platform, ada)["replicas"]]
        _delete(platform, loop, ada)
        assert {platform.job(j)["state"] for j in jobs} == {"cancelled"}
    finally:
        shutil.rmtree(models, ignore_errors=True)


def _port(platform: Platform, job_id: int) -> int:
    with read_session(platform.sessions) as session:
        job = session.get(JobRow, job_id)
        assert job is not None and job.master_port
        return job.master_port


def test_bad_documents_are_refused_naming_the_field(platform: Platform) -> None:
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    for body, field in (
        ({"replicas": {"min": 2, "max": 1}}, "replicas"),
        ({"readiness": {"path": "x"}}, "readiness.path"),
        ({"resources": {"cpu": 10_000}}, "resources"),
        ({"priority": "urgent"}, "priority"),
        ({"time": "forever"}, "time"),
        ({"port": 80}, "port"),  # not above 1024
        ({"port": "eighty"}, "port"),
        ({"port": 40000}, "port"),  # the kernel's ephemeral range
        ({"port": 31000}, "port"),  # the range replicas' $PORT comes from
    ):
        spec = {**_spec(MODEL, "1"), **body}
        answer = platform.call("POST", "/api/v1/services", ada, json=spec)
        assert 400 <= answer.status_code < 500, answer.text
        said = answer.json()
        # `port` itself, never a branch of its type (`port.literal['auto']`).
        assert said["field"] == field or (field != "port" and said["field"].startswith(field))
        if body == {"port": 80}:
            assert "1025" in said["message"], said
    assert platform.ok("GET", "/api/v1/services", ada) == []


def test_a_replica_that_ends_before_it_is_ready_delays_the_next_one(platform: Platform) -> None:
    """A wrong command (the example's model not copied where the spec says) must not start a
    replica job every pass: each crash in a row doubles the wait, which the reason names."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    spec = {**_spec(Path("/nonexistent/model.py"), "1"), "replicas": 1}
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    loop = _reconciler(platform)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        platform.tick()
        loop.tick()
        time.sleep(0.05)
    replicas = [j for j in platform.ok("GET", "/api/v1/jobs", ada) if j["name"] == "iris"]
    # 1 s, then 2 s, then 4 s between starts: at most three replicas in five seconds.
    assert 1 <= len(replicas) <= 3, [j["id"] for j in replicas]
    reason = _show(platform, ada)["reason"]
    assert "ended before it was ready" in reason and "the next one starts in" in reason, reason
    # The fixed spec: the crash loop was the old spec's, and the proxy must hold a request
    # for the new one at once, before the reconciler has seen it (not answer the old 503).
    platform.ok("POST", "/api/v1/services", ada, json={**spec, "command": ["python3", str(MODEL)]})
    assert _show(platform, ada)["reason"] == ""
    _delete(platform, loop, ada)


def test_a_new_leader_keeps_a_crash_loops_back_off(platform: Platform) -> None:
    """The back-off is on the service's row: a reconciler made afresh (a new leader, or the
    server restarted) waits it out instead of starting the next replica at once."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    spec = {**_spec(Path("/nonexistent/model.py"), "1"), "replicas": 1}
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    rules = platform.context.rules

    def leader() -> ServiceReconciler:
        return ServiceReconciler(
            platform.sessions,
            platform.context.clock,
            ReconcilerConfig(job_token_key=b"k" * 32, drain_s=0, interval_s=0, crash_backoff_s=60),
            lambda session, service, now: start_replica(session, service, rules, now),
            port_holder=platform.driver.port_holder,
        )

    def replicas() -> list[int]:
        return [j["id"] for j in platform.ok("GET", "/api/v1/jobs", ada) if j["name"] == "iris"]

    first = leader()
    _until(platform, first, lambda: "ended before it was ready" in _show(platform, ada)["reason"])
    assert len(replicas()) == 1
    with read_session(platform.sessions) as session:
        row = session.scalars(select(ServiceRow)).one()
        assert row.crashes == 1 and row.retry_at is not None
    second = leader()
    for _ in range(20):
        platform.tick()
        second.tick()
        time.sleep(0.05)
    assert len(replicas()) == 1
    assert "the next one starts in 1m" in _show(platform, ada)["reason"]
    # A fixed spec is a new generation: its first replica starts at once.
    platform.ok("POST", "/api/v1/services", ada, json={**spec, "command": ["python3", str(MODEL)]})
    _until(platform, second, lambda: len(replicas()) == 2)
    with read_session(platform.sessions) as session:
        row = session.scalars(select(ServiceRow)).one()
        assert (row.crashes, row.retry_at) == (0, None)
    _delete(platform, second, ada)


def test_a_services_history_says_what_happened_to_it(platform: Platform) -> None:
    """``service show`` lists the service's events, oldest first: a crash, the fix applied,
    its replica started and ready; at most ``KEPT`` of them are kept."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    spec = {**_spec(Path("/nonexistent/model.py"), "1"), "replicas": 1}
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    loop = _reconciler(platform)
    _until(platform, loop, lambda: "ended before it was ready" in _show(platform, ada)["reason"])
    platform.ok("POST", "/api/v1/services", ada, json={**spec, "command": ["python3", str(MODEL)]})
    _until(platform, loop, lambda: _show(platform, ada)["ready"] == 1)
    shown = _show(platform, ada)
    said = [e["message"] for e in shown["events"]]
    (ready,) = [r["job_id"] for r in shown["replicas"]]
    crashed = said[3].split()[2]
    assert said[:3] == [
        "created by ada",
        "wanted replicas: 0 -> 1",
        f"replica job {crashed} started (generation 1)",
    ], said
    assert said[3].startswith(f"replica job {crashed} ended before it was ready"), said
    assert said[4] == "applied by ada: generation 2, the replicas roll", said
    assert f"replica job {ready} started (generation 2)" in said[5:], said
    assert said[-1] == f"replica job {ready} ready", said
    times = [e["at"] for e in shown["events"]]
    assert times == sorted(times)
    # Listed services carry no history (a query per service); the one shown does.
    assert platform.ok("GET", "/api/v1/services", ada)[0]["events"] == []
    with transaction(platform.sessions) as session:
        service_id = session.scalars(select(ServiceRow.id)).one()
        for i in range(KEPT + 10):
            record_service_event(session, service_id, f"note {i}", dt.datetime.now(dt.UTC))
    with read_session(platform.sessions) as session:
        kept = session.scalars(
            select(ServiceEventRow.message).where(ServiceEventRow.service_id == service_id)
        ).all()
    assert kept == [f"note {i}" for i in range(10, KEPT + 10)]
    _delete(platform, loop, ada)
    with read_session(platform.sessions) as session:
        assert session.scalars(select(ServiceEventRow)).all() == []  # gone with the service


def test_the_end_of_a_replaced_specs_replica_is_not_the_services_reason(
    platform: Platform,
) -> None:
    """A broken spec's replica that crashed just before the fixed spec was applied, seen by
    the reconciler only after it: its end belongs to the roll, and the fixed service,
    serving, must not show that crash as its reason (seen once in CI)."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    crashes = ["python3", "-c", "import time; time.sleep(1); raise SystemExit(2)"]
    spec = {**_spec(MODEL, "1"), "replicas": 1, "command": crashes}
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    loop = _reconciler(platform)

    def state(job_id: int) -> str:
        return str(platform.ok("GET", f"/api/v1/jobs/{job_id}", ada)["state"])

    _until(platform, loop, lambda: bool(_show(platform, ada)["replicas"]))
    broken = _show(platform, ada)["replicas"][0]["job_id"]
    deadline = time.monotonic() + 60
    while state(broken) != "failed":  # the reconciler does not look meanwhile
        assert time.monotonic() < deadline, "the broken replica did not end"
        platform.tick()
        time.sleep(0.1)
    platform.ok("POST", "/api/v1/services", ada, json={**spec, "command": ["python3", str(MODEL)]})
    _until(platform, loop, lambda: _show(platform, ada)["ready"] == 1)
    assert _show(platform, ada)["reason"] == ""
    _delete(platform, loop, ada)


def _free_fixed_port() -> int:
    """A port below the replicas' range that nothing listens on (tests run side by side)."""
    for port in random.sample(range(20000, 29000), 200):
        if not port_listened(port):
            return port
    raise AssertionError("no free port")


def test_a_fixed_port_takes_one_replica_per_node_and_the_other_waits_naming_it(
    platform: Platform,
) -> None:
    models = public_dir("vai-svc-fixed-")
    model = models / "model.py"
    shutil.copy(MODEL, model)
    model.chmod(0o644)
    port = _free_fixed_port()
    try:
        platform.tenant("physics")
        ada = platform.user("ada", "physics")
        spec = {**_spec(model, "1"), "port": port}
        created = platform.ok("POST", "/api/v1/services", ada, json=spec)
        assert created["spec"]["port"] == port  # shown as applied
        loop = _reconciler(platform)
        _until(platform, loop, lambda: _show(platform, ada)["ready"] == 1)
        waiting = f"waiting for port {port}: it is taken on every node"

        def one_waits() -> bool:
            return [r["reason"] for r in _show(platform, ada)["replicas"] if not r["ready"]] == [
                waiting
            ]

        _until(platform, loop, one_waits)
        shown = _show(platform, ada)
        (ready,) = [r for r in shown["replicas"] if r["ready"]]
        (pending,) = [r for r in shown["replicas"] if not r["ready"]]
        assert pending["state"] == "pending" and pending["node"] is None
        assert _port(platform, ready["job_id"]) == port  # $PORT is the fixed port
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        assert answer["replica"] == str(ready["job_id"])
        assert platform.job(pending["job_id"], ada)["reason"] == waiting  # `virtuai jobs`

        # A roll cannot add a replica before one leaves the port: one old one goes first.
        platform.ok("POST", "/api/v1/services", ada, json={**spec, "env": {"MODEL_VERSION": "2"}})

        def rolled() -> bool:
            shown = _show(platform, ada)
            return [r["generation"] for r in shown["replicas"] if r["ready"]] == [2]

        _until(platform, loop, rolled)
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        assert answer["version"] == "2"
        _delete(platform, loop, ada)
        assert not port_listened(port)
    finally:
        shutil.rmtree(models, ignore_errors=True)


SQUATTER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"squatter")
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def test_a_process_that_holds_a_replicas_port_is_never_taken_for_it(platform: Platform) -> None:
    models = public_dir("vai-svc-squat-")
    model = models / "model.py"
    shutil.copy(MODEL, model)
    model.chmod(0o644)
    squatter: subprocess.Popen[bytes] | None = None
    try:
        platform.tenant("physics")
        ada = platform.user("ada", "physics")
        # The first replica binds late: a squatter takes its port first (and answers 200).
        slow = f"sleep 3; exec python3 {model}"
        spec = {**_spec(model, "1"), "replicas": 1, "command": ["/bin/sh", "-c", slow]}
        spec["readiness"] = {"path": "/", "interval": 1}
        platform.ok("POST", "/api/v1/services", ada, json=spec)
        loop = _reconciler(platform)

        def running() -> bool:
            replicas = _show(platform, ada)["replicas"]
            return bool(replicas) and replicas[0]["state"] == "running"

        _until(platform, loop, running)
        first = _show(platform, ada)["replicas"][0]["job_id"]
        taken = _port(platform, first)
        squatter = subprocess.Popen([sys.executable, "-c", SQUATTER, str(taken)])
        _until(platform, loop, lambda: port_listened(taken))
        held = f"port {taken} is held by a process that is not the replica's"

        def replaced() -> bool:
            shown = _show(platform, ada)
            assert not any(r["ready"] and r["job_id"] == first for r in shown["replicas"])
            return held in shown["reason"]

        _until(platform, loop, replaced)
        # Its replacement listens on another port (`auto`), and serves.
        _until(platform, loop, lambda: _show(platform, ada)["ready"] == 1)
        (serving,) = [r for r in _show(platform, ada)["replicas"] if r["ready"]]
        assert serving["job_id"] != first and _port(platform, serving["job_id"]) != taken
        assert platform.job(first, ada)["state"] in {"cancelled", "failed"}
        _delete(platform, loop, ada)
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait()
        shutil.rmtree(models, ignore_errors=True)


def test_a_fixed_port_another_process_holds_keeps_the_replica_waiting(platform: Platform) -> None:
    models = public_dir("vai-svc-held-")
    model = models / "model.py"
    shutil.copy(MODEL, model)
    model.chmod(0o644)
    port = _free_fixed_port()
    squatter = subprocess.Popen([sys.executable, "-c", SQUATTER, str(port)])
    try:
        platform.tenant("physics")
        ada = platform.user("ada", "physics")
        platform.ok("POST", "/api/v1/services", ada, json={**_spec(model, "1"), "port": port})
        loop = _reconciler(platform)
        _until(
            platform, loop, lambda: port_listened(port) and bool(_show(platform, ada)["replicas"])
        )
        held = f"port {port} is taken on node node-1 by a process that is not a virtuai workload"

        def told() -> bool:
            replicas = _show(platform, ada)["replicas"]
            assert not any(r["ready"] for r in replicas)
            return any(held in r["reason"] for r in replicas)

        _until(platform, loop, told)
        # The port is let go: the replica starts on it and serves.
        squatter.kill()
        squatter.wait()
        _until(platform, loop, lambda: _show(platform, ada)["ready"] >= 1)
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        assert answer["version"] == "1"
        _delete(platform, loop, ada)
    finally:
        squatter.kill()
        squatter.wait()
        shutil.rmtree(models, ignore_errors=True)


def test_requests_counted_before_a_service_existed_do_not_scale_it(platform: Platform) -> None:
    """SQLite gives a deleted service's id to the next one created; the proxies' counts of
    the deleted one (by id, in memory and in other servers' rows) must not wake it."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    spec = {**_spec(MODEL, "1"), "replicas": {"min": 0, "max": 2}, "idle_timeout": "60s"}
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    created = dt.datetime.fromisoformat(_show(platform, ada)["created_at"]).timestamp()
    counted = {"last": created - 5.0, "rate": 10.0}  # the previous owner's of this id
    rules = platform.context.rules
    loop = ServiceReconciler(
        platform.sessions,
        platform.context.clock,
        ReconcilerConfig(job_token_key=b"k" * 32, drain_s=0, interval_s=0),
        lambda session, service, now: start_replica(session, service, rules, now),
        traffic_last=lambda _service: counted["last"],
        traffic_rate=lambda _service: counted["rate"],
    )
    for _ in range(3):
        loop.tick()
    assert _show(platform, ada)["desired"] == 0
    counted["last"] = time.time()  # a request to this service: it scales from zero
    loop.tick()
    assert _show(platform, ada)["desired"] >= 1
    _delete(platform, loop, ada)


def test_a_deleted_services_id_is_never_given_to_the_next_service(platform: Platform) -> None:
    """The proxies count requests by service id: the id of a deleted service (the last one
    created) must not go to the next service (SQLite did so before migration 0031)."""
    platform.tenant("physics")
    ada = platform.user("ada", "physics")
    spec = {**_spec(MODEL, "1"), "replicas": {"min": 0, "max": 1}}
    loop = _reconciler(platform)

    def service_id() -> int:
        with read_session(platform.sessions) as session:
            found = session.scalar(select(ServiceRow.id).where(ServiceRow.name == "iris"))
        assert found is not None
        return found

    platform.ok("POST", "/api/v1/services", ada, json=spec)
    first = service_id()
    _delete(platform, loop, ada)
    platform.ok("POST", "/api/v1/services", ada, json=spec)
    assert service_id() > first
    _delete(platform, loop, ada)
