"""Services' autoscaling counts the requests of every server: two real `virtuai up` in
their own network namespaces (``support.netcluster``), one PostgreSQL.

The replicas run on the leader's machine (the other is cordoned), and every request is
sent to the *other* server, whose proxy hands it to the leader's (``proxy.peers``).  A
request so handed over is counted once, where it came in, so the leader's own proxy
counts none of them: it knows of them only through the other server's rows in
``service_traffic`` (``control.servicetraffic``).  A steady trickle keeps a ``min: 0``
service from scaling to zero past its idle timeout, and a load above ``target_rps``
scales it to two replicas.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.netcluster import Instance, NetCluster, can_run

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.skipif(can_run() is not None, reason=str(can_run())),
]
EXAMPLE = Path(__file__).parents[2] / "examples" / "services" / "iris" / "model.py"


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetCluster]:
    root = Path(tempfile.mkdtemp(prefix="vai-netcluster-svc-"))
    root.chmod(0o755)
    net = NetCluster(
        root / "cluster",
        size=2,
        extra_env={
            "VIRTUAI_SERVICES__RECONCILE_INTERVAL_S": "0.2",
            "VIRTUAI_SERVICES__RATE_WINDOW_S": "3",
            "VIRTUAI_SERVICES__TRAFFIC_PUBLISH_S": "0.5",
            "VIRTUAI_SERVICES__SCALE_DOWN_DELAY_S": "2",
        },
    )
    try:
        net.start()
        yield net
    finally:
        net.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _call(
    net: NetCluster, method: str, path: str, via: Instance, token: str = "", **kwargs: Any
) -> Any:
    """As ``net.user``, with room for a loaded machine (the shared helper waits 3 s)."""
    headers = {"Authorization": f"Bearer {token or net.token}"}
    answer = httpx.request(method, f"{via.url}{path}", headers=headers, timeout=60, **kwargs)
    assert answer.status_code < 300, (answer.status_code, answer.text)
    return answer.json()


def _show(net: NetCluster) -> dict[str, Any]:
    shown: dict[str, Any] = _call(net, "GET", "/api/v1/services/iris", net.instances[0])
    return shown


def _apply_iris(cluster: NetCluster, via: Instance, name: str, **fields: Any) -> None:
    """The example model as service ``name`` of tenant ``lab``, applied through ``via``."""
    model = cluster.public / "model.py"
    shutil.copy(EXAMPLE, model)
    model.chmod(0o644)
    document = {
        "type": "service",
        "name": name,
        "command": ["python3", str(model)],
        "resources": {"cpu": 0.2, "memory": "128Mi"},
        "readiness": {"path": "/healthz", "interval": 1},
        **fields,
    }
    _call(cluster, "POST", "/api/v1/services", via, json=document)


def test_requests_to_another_server_scale_the_service(cluster: NetCluster) -> None:
    leader = cluster.leader()
    other: Instance = next(i for i in cluster.instances if i is not leader)
    cordon = f"/api/v1/nodes/{other.name}/cordon"  # the replicas run on the leader's machine
    _call(cluster, "POST", cordon, leader, cluster.admin_token)
    _apply_iris(
        cluster, other, "iris", replicas={"min": 0, "max": 2, "target_rps": 5}, idle_timeout="4s"
    )
    url = f"{other.url}/svc/lab/iris/healthz"
    headers = {"Authorization": f"Bearer {cluster.token}"}

    # A cold start through the other server; then a request a second, for three idle
    # timeouts: the replica stays (the leader hears of them), never scaled to zero.
    assert httpx.get(url, headers=headers, timeout=120).status_code == 200
    first = _show(cluster)
    assert [r["state"] for r in first["replicas"]] == ["running"]
    job = _call(cluster, "GET", f"/api/v1/jobs/{first['replicas'][0]['job_id']}", leader)
    placed = job["placement"]
    assert [p["node"] for p in placed] == [leader.name]
    for _ in range(12):
        assert httpx.get(url, headers=headers, timeout=30).status_code == 200
        shown = _show(cluster)
        assert shown["desired"] >= 1, shown
        time.sleep(1)
    assert [r["job_id"] for r in _show(cluster)["replicas"]] == [
        r["job_id"] for r in first["replicas"]
    ]

    # Far above 5 requests/s, all through the other server: two replicas.
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            while not stop.is_set():
                statuses[client.get(url).status_code] += 1
                time.sleep(0.01)

    clients = [threading.Thread(target=load) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        _wait("two ready replicas", lambda: _show(cluster)["ready"] == 2)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert set(statuses) == {200}, statuses

    # No more requests: back to one, then to none after the idle timeout.
    _wait("scaled to zero", lambda: _show(cluster)["desired"] == 0, timeout=60)
    assert _show(cluster)["ready"] == 0


def test_a_replica_on_a_machine_that_does_not_lead_is_probed_there_and_served(
    cluster: NetCluster,
) -> None:
    # Its port refuses every other machine, the leader's included: only its own server can
    # ask it whether it is ready (control.serving probes on each server's own nodes).
    leader = cluster.leader()
    other: Instance = next(i for i in cluster.instances if i is not leader)
    _call(cluster, "POST", f"/api/v1/nodes/{other.name}/uncordon", leader, cluster.admin_token)
    _call(cluster, "POST", f"/api/v1/nodes/{leader.name}/cordon", leader, cluster.admin_token)
    try:
        _apply_iris(cluster, leader, "far", replicas=1)

        def show() -> Any:
            return _call(cluster, "GET", "/api/v1/services/far", leader)

        _wait("the replica ready on the other machine", lambda: show()["ready"] == 1, 90)
        [replica] = show()["replicas"]
        job = _call(cluster, "GET", f"/api/v1/jobs/{replica['job_id']}", leader)
        assert [p["node"] for p in job["placement"]] == [other.name]
        headers = {"Authorization": f"Bearer {cluster.token}"}
        for via in (leader, other):  # through the leader's proxy, handed over, and directly
            answer = httpx.get(f"{via.url}/svc/lab/far/healthz", headers=headers, timeout=60)
            assert answer.status_code == 200, (via.name, answer.status_code, answer.text)
        _call(cluster, "DELETE", "/api/v1/services/far", leader)
    finally:
        _call(cluster, "POST", f"/api/v1/nodes/{leader.name}/uncordon", leader, cluster.admin_token)


def test_a_fixed_port_spreads_the_replicas_over_the_machines(cluster: NetCluster) -> None:
    # `port: 8000` on two machines: one replica on each, ready (probed by its own server,
    # which found the listener on 8000 to be the replica's), the third waits for the port.
    leader = cluster.leader()
    for instance in cluster.instances:
        uncordon = f"/api/v1/nodes/{instance.name}/uncordon"
        _call(cluster, "POST", uncordon, leader, cluster.admin_token)
    _apply_iris(cluster, leader, "fixed", replicas=3, port=8000)

    def show() -> Any:
        return _call(cluster, "GET", "/api/v1/services/fixed", leader)

    _wait("a ready replica on each machine", lambda: show()["ready"] == 2, 90)
    waiting = "waiting for port 8000: it is taken on every node"
    _wait(
        "the third replica waiting for the port",
        lambda: [r["reason"] for r in show()["replicas"] if not r["ready"]] == [waiting],
    )
    shown = show()
    ready = [r for r in shown["replicas"] if r["ready"]]
    assert sorted(r["node"] for r in ready) == sorted(i.name for i in cluster.instances)
    # Through either server's proxy: half the requests are handed to the other machine,
    # whose server must serve them with its own replica (balancing them again over both
    # machines' replicas would pick the first machine's, which it does not forward to).
    headers = {"Authorization": f"Bearer {cluster.token}"}
    for via in cluster.instances:
        for _ in range(8):
            answer = httpx.get(f"{via.url}/svc/lab/fixed/healthz", headers=headers, timeout=60)
            assert answer.status_code == 200, (via.name, answer.status_code, answer.text)
    _call(cluster, "DELETE", "/api/v1/services/fixed", leader)
