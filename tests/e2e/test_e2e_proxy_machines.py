"""The proxy and port-forward reach a workload on another machine: two real `virtuai up`
instances in their own network namespaces (``support.netcluster``), each with its own
keys, one PostgreSQL.

The first machine is cordoned, so the notebook and the job run on the second; every
request is sent to the first, whose server hands it to the second's (``proxy.peers``,
``services.portforward.PeerTarget``): a real JupyterLab's kernel runs ``1+1`` through
the first machine's proxy WebSocket, and a real HTTP server in a job answers through
the first machine's port-forward.  Refusals made there (401) or on the second machine
(409: nothing listens on that port) come back as they are, and a request already
handed over once is not handed over again.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_e2e_notebooks import _run, public_jupyter
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from support.netcluster import NetCluster, can_run
from virtuai import portwire

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.skipif(can_run() is not None, reason=str(can_run())),
]

START_S = 180


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetCluster]:
    root = Path(tempfile.mkdtemp(prefix="vai-netcluster-px-"))
    root.chmod(0o755)
    python = public_jupyter(root / "jupyter-venv")
    net = NetCluster(root / "cluster", size=2, extra_env={"VIRTUAI_NOTEBOOKS__PYTHON": str(python)})
    try:
        net.start()
        first, _second = net.instances
        net.admin("POST", f"/api/v1/nodes/{first.name}/cordon", via=first)
        yield net
    finally:
        net.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _placed_on(net: NetCluster, job_id: int) -> list[str]:
    return [p["node"] for p in net.job(job_id)["placement"]]


def test_a_notebook_on_another_machine_answers_through_this_machines_proxy(
    cluster: NetCluster,
) -> None:
    first, second = cluster.instances
    notebook = cluster.user(
        "POST", "/api/v1/notebooks", json={"name": "lab", "resources": {"cpu": 1}}, via=first
    )
    status = f"{first.url}/user/ann/lab/api/status"
    deadline = time.monotonic() + START_S
    answer = httpx.get(status, headers=_bearer(cluster.token), timeout=10)
    while answer.status_code != 200 and time.monotonic() < deadline:
        assert answer.status_code == 503, answer.text
        time.sleep(0.5)
        answer = httpx.get(status, headers=_bearer(cluster.token), timeout=10)
    assert answer.status_code == 200, (answer.text, second.log_tail())
    assert _placed_on(cluster, notebook["id"]) == [second.name]

    kernel = httpx.post(
        f"{first.url}/user/ann/lab/api/kernels", headers=_bearer(cluster.token), timeout=30
    )
    assert kernel.status_code == 201, kernel.text
    url = first.url.replace("http", "ws") + f"/user/ann/lab/api/kernels/{kernel.json()['id']}"
    with connect(f"{url}/channels", additional_headers=_bearer(cluster.token)) as ws:
        assert _run(ws, "1+1") == "2"
        assert _run(ws, "import os; os.environ.get('VIRTUAI_NODE')") == repr(second.name)

    # Refused on the first machine: no credentials.
    assert httpx.get(status, timeout=10).status_code == 401
    # A request another server handed over is not handed over again.
    again = httpx.get(
        status,
        headers={**_bearer(cluster.token), "X-Virtuai-Forwarded-By": "n9"},
        timeout=10,
    )
    assert again.status_code == 503
    assert second.name in again.json()["message"]


def _forward(net: NetCluster, job_id: int, port: int) -> ClientConnection:
    first = net.instances[0]
    url = first.url.replace("http", "ws") + f"/api/v1/jobs/{job_id}/port-forward/ws?port={port}"
    return connect(url, additional_headers=_bearer(net.token), open_timeout=20)


def test_port_forward_reaches_a_task_on_another_machine(cluster: NetCluster) -> None:
    first, second = cluster.instances
    port = random.randint(20000, 29999)
    job_id = cluster.submit(
        ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"], via=first
    )
    cluster.wait([job_id], states={"running"}, timeout=60)
    assert _placed_on(cluster, job_id) == [second.name]

    deadline = time.monotonic() + 30
    while True:  # until the server in the job listens (409 naming the port until then)
        try:
            ws = _forward(cluster, job_id, port)
            break
        except InvalidStatus as refused:
            assert refused.response.status_code == 409, refused.response.body
            assert time.monotonic() < deadline, refused.response.body
            time.sleep(0.5)
    with ws:
        ws.send(portwire.frame(portwire.DATA, b"GET / HTTP/1.0\r\n\r\n"))
        ws.send(portwire.frame(portwire.EOF))
        received = b""
        while True:
            channel, payload = portwire.split(bytes(ws.recv(timeout=30)))
            if channel != portwire.DATA:
                break
            received += payload
    assert received.startswith(b"HTTP/1.0 200"), received[:200]

    # The second machine's refusal comes back as it is: nothing of the job listens there.
    with pytest.raises(InvalidStatus) as refused:
        _forward(cluster, job_id, port + 1 if port < 29999 else port - 1)
    assert refused.value.response.status_code == 409
    assert b"listens on port" in refused.value.response.body
    # The first machine's own check: no credentials.
    url = first.url.replace("http", "ws") + f"/api/v1/jobs/{job_id}/port-forward/ws?port={port}"
    with pytest.raises(InvalidStatus) as anonymous:
        connect(url, open_timeout=20)
    assert anonymous.value.response.status_code == 401
