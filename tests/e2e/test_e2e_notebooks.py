"""Notebooks against a real ``virtuai up``: a real JupyterLab (from this venv, through the
setting ``notebooks.python``), run by the local driver as the tenant's Unix user, reached
only through the server's authenticated proxy.

One server and one notebook are shared by the module (JupyterLab takes seconds to start);
the tests run in order: the kernel answers through the proxy's WebSocket, strangers are
refused, the notebook survives a restart of the server, and an idle one is culled."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from support.browser import chromium_path, open_tab
from support.platform import TEST_USER_PREFIX, public_dir, remove_state
from support.server import Server

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="notebooks run as the tenant's Unix user"),
]
START_S = 90.0


@dataclass
class Lab:
    server: Server
    workspaces: Path
    alice: str
    bob: str
    carol: str


def public_jupyter(directory: Path) -> Path:
    """A Python that tenant users can run, with this venv's JupyterLab: a venv of the system's
    Python 3.11 that reads this venv's site-packages (which may live under /root)."""
    system = Path("/usr/bin/python3")
    version = subprocess.run(
        [str(system), "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if version.stdout.strip() != "True":
        pytest.skip("needs the system's Python 3.11 (Debian's python3)")
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(directory)], check=True)
    site = next((directory / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p, "jupyterlab").is_dir()]
    (site / "virtuai-test.pth").write_text("\n".join(ours) + "\n")
    return directory / "bin" / "python"


def _token(server: Server, *args: str) -> str:
    return server.cli("user", "create", *args).splitlines()[0].strip()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("notebooks")
    workspaces = public_dir("vai-nb-ws-")
    python = public_jupyter(public_dir("vai-nb-py-") / "venv")
    server = Server(
        root / "home",
        root / "config",
        {
            "VIRTUAI_WORKSPACES": str(workspaces),
            "VIRTUAI_LOCAL__USER_PREFIX": TEST_USER_PREFIX,
            "VIRTUAI_LOCAL__KILL_GRACE_S": "5",
            "VIRTUAI_NOTEBOOKS__PYTHON": str(python),
            "VIRTUAI_NOTEBOOKS__CULL_INTERVAL_S": "0.5",
            "VIRTUAI_SCHEDULER__INTERVAL_S": "0.2",
        },
    )
    server.start()
    server.cli("tenant", "create", "physics")
    server.cli("tenant", "create", "chem")
    lab = Lab(
        server,
        workspaces,
        alice=_token(server, "alice", "--tenant", "physics"),
        bob=_token(server, "bob", "--tenant", "physics"),
        carol=_token(server, "carol", "--tenant", "chem"),
    )
    try:
        yield lab
    finally:
        for name, token in (("lab", lab.alice), ("idle", lab.carol)):
            server.run("notebook", "stop", name, token=token)
        time.sleep(2)
        if server.process is not None and server.process.poll() is None:
            server.kill()
        remove_state(workspaces, ["physics", "chem"])
        shutil.rmtree(python.parent.parent.parent, ignore_errors=True)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_reachable(lab: Lab, token: str, path: str) -> None:
    """Until Jupyter answers through the proxy (503 while it starts)."""
    deadline = time.monotonic() + START_S
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        last = httpx.get(f"{lab.server.url}{path}api/status", headers=_bearer(token), timeout=10)
        if last.status_code == 200:
            return
        assert last.status_code == 503, (
            last.text,
            lab.server.cli("jobs", "--json", "--state", "failed"),
        )
        time.sleep(0.5)
    raise AssertionError(f"never reachable: {last and last.text}\n{lab.server.log.read_text()}")


def _run(ws: ClientConnection, code: str) -> str:
    """Execute ``code`` in the kernel; its result's text/plain."""
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False},
                "channel": "shell",
            }
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message: dict[str, Any] = json.loads(ws.recv(timeout=60))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "execute_result":
            return str(message["content"]["data"]["text/plain"])
        if message["msg_type"] == "error":
            raise AssertionError(message["content"])
    raise AssertionError("no execute_result")


def _kernel_ws(lab: Lab, token: str, kernel: str) -> ClientConnection:
    url = lab.server.url.replace("http", "ws") + f"/user/alice/lab/api/kernels/{kernel}/channels"
    return connect(url, additional_headers=_bearer(token), open_timeout=30)


def test_a_kernel_answers_through_the_proxy_websocket(lab: Lab) -> None:
    started = lab.server.json("notebook", "start", "lab", "--cpu", "1", token=lab.alice)
    assert started["path"] == "/user/alice/lab/"
    assert started["url"] == f"{lab.server.url}/user/alice/lab/"
    _wait_reachable(lab, lab.alice, "/user/alice/lab/")

    # A notebook is a job: in `jobs`, with its kind.
    jobs = lab.server.json("jobs", token=lab.alice)
    assert [j["id"] for j in jobs] == [started["id"]]
    assert lab.server.cli("notebook", "open", "lab", token=lab.alice).strip() == started["url"]

    kernel = httpx.post(
        f"{lab.server.url}/user/alice/lab/api/kernels", headers=_bearer(lab.alice), timeout=30
    )
    assert kernel.status_code == 201, kernel.text
    with _kernel_ws(lab, lab.alice, kernel.json()["id"]) as ws:
        assert _run(ws, "1+1") == "2"
        # It runs as the tenant's user, at home in the tenant's workspace.
        home = lab.workspaces / "physics" / "home" / "alice"
        assert _run(ws, "import os; os.getcwd()") == repr(str(home))
        assert _run(ws, "import getpass; getpass.getuser()") == repr(f"{TEST_USER_PREFIX}physics")
        # Neither the secret nor the caller's token reaches the workload.
        assert _run(ws, "sorted(k for k in os.environ if 'SECRET' in k or 'TOKEN' in k)") in (
            "[]",
            "['VIRTUAI_JOB_TOKEN']",
        )

    # The page does not hand out a usable Jupyter token, and the port refuses strangers.
    page = httpx.get(f"{lab.server.url}/user/alice/lab/lab", headers=_bearer(lab.alice), timeout=30)
    assert page.status_code == 200
    assert '"token": ""' in page.text
    port = _master_port(lab, started["id"])
    direct = httpx.get(f"http://127.0.0.1:{port}/user/alice/lab/api/status", timeout=10)
    assert direct.status_code == 403


def _master_port(lab: Lab, job_id: int) -> str:
    spec = json.loads(next((lab.server.home / "tasks").glob(f"{job_id}.*.0/spec.json")).read_text())
    return str(spec["env"]["MASTER_PORT"])


def test_strangers_are_refused(lab: Lab) -> None:
    url = f"{lab.server.url}/user/alice/lab/api/status"
    assert httpx.get(url, headers=_bearer(lab.bob), timeout=10).status_code == 403
    # Same answer whether or not the notebook exists: names are not probed.
    other = f"{lab.server.url}/user/alice/nothing/api/status"
    assert httpx.get(other, headers=_bearer(lab.bob), timeout=10).status_code == 403
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    browser = httpx.get(url, headers={"Accept": "text/html"}, timeout=10)
    assert browser.status_code == 302
    assert browser.headers["location"] == "/?next=%2Fuser%2Falice%2Flab%2Fapi%2Fstatus"
    ws_url = lab.server.url.replace("http", "ws") + "/user/alice/lab/api/events/subscribe"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, additional_headers=_bearer(lab.bob), open_timeout=10)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=10)
    assert refused.value.response.status_code == 401


def test_a_browser_session_cookie_reaches_the_notebook(lab: Lab) -> None:
    with httpx.Client(base_url=lab.server.url, timeout=10) as browser:
        signed_in = browser.post(
            "/api/v1/session", json={"token": lab.alice}, headers={"X-Virtuai-Csrf": "1"}
        )
        assert signed_in.status_code == 200, signed_in.text
        assert browser.get("/user/alice/lab/api/status").status_code == 200
        # An unsafe request by cookie from another site is refused; from this one it passes.
        evil = browser.post("/user/alice/lab/api/kernels", headers={"Origin": "http://evil"})
        assert evil.status_code == 403
        ours = browser.post("/user/alice/lab/api/kernels", headers={"Origin": lab.server.url})
        # Past the proxy: Jupyter's own XSRF check now wants its cookie, as in a browser.
        assert ours.status_code == 201 or "xsrf" in ours.text.lower(), ours.text


BROWSER_RUN = """async () => {
  const xsrf = document.cookie.split("; ").find((c) => c.startsWith("_xsrf="));
  const headers = xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf.slice(6)) } : {};
  const made = await fetch("/user/alice/lab/api/kernels", { method: "POST", headers });
  if (made.status !== 201) return `kernel: ${made.status} ${await made.text()}`;
  const kernel = await made.json();
  return await new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/user/alice/lab/api/kernels/${kernel.id}/channels`);
    const id = crypto.randomUUID();
    ws.onopen = () => ws.send(JSON.stringify({
      header: { msg_id: id, username: "b", session: crypto.randomUUID(),
                msg_type: "execute_request", version: "5.3" },
      parent_header: {}, metadata: {}, content: { code: "6*7", silent: false }, channel: "shell",
    }));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.parent_header.msg_id === id && message.msg_type === "execute_result") {
        resolve(message.content.data["text/plain"]);
        ws.close();
      }
    };
    ws.onerror = () => resolve("websocket refused");
    setTimeout(() => resolve("timed out"), 30000);
  });
}"""


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (scripts/system-packages.sh)"
)
def test_a_browser_signs_in_opens_jupyterlab_and_runs_a_cell(lab: Lab, browser: Browser) -> None:
    """The whole browser path: redirect to sign-in and back, JupyterLab's pages by cookie,
    Jupyter's own XSRF check, and a kernel WebSocket authenticated by the cookie (Origin)."""
    tab = open_tab(browser, lab.server.url, server_log=lab.server.log)
    try:
        tab.page.goto("/user/alice/lab/lab")
        assert "/?next=" in tab.page.url
        tab.page.fill("#token", lab.alice)
        tab.page.click("form button[type=submit]")
        tab.page.wait_for_url("**/user/alice/lab/lab**")
        tab.page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        assert tab.page.evaluate(BROWSER_RUN) == "42"
        assert tab.foreign_requests == []
    finally:
        tab.close()


def test_the_notebook_survives_a_server_restart(lab: Lab) -> None:
    kernels = httpx.get(
        f"{lab.server.url}/user/alice/lab/api/kernels", headers=_bearer(lab.alice), timeout=10
    ).json()
    assert kernels
    lab.server.kill()
    lab.server.start()
    with _kernel_ws(lab, lab.alice, kernels[0]["id"]) as ws:
        assert _run(ws, "40+2") == "42"
    listed = lab.server.json("notebook", "list", token=lab.alice)
    assert [(n["name"], n["state"]) for n in listed] == [("lab", "running")]


def test_an_idle_notebook_is_culled_and_its_home_kept(lab: Lab) -> None:
    lab.server.cli("tenant", "set", "chem", "--notebook-idle-timeout", "3s")
    started = lab.server.json("notebook", "start", "idle", token=lab.carol)
    _wait_reachable(lab, lab.carol, "/user/carol/idle/")
    saved = httpx.put(
        f"{lab.server.url}/user/carol/idle/api/contents/kept.txt",
        headers=_bearer(lab.carol),
        json={"type": "file", "format": "text", "content": "still here"},
        timeout=10,
    )
    assert saved.status_code in (200, 201), saved.text
    deadline = time.monotonic() + 60
    while (job := lab.server.json("job", str(started["id"]), token=lab.carol))["state"] not in (
        "cancelled",
        "failed",
        "succeeded",
    ):
        assert time.monotonic() < deadline, (job, lab.server.log.read_text()[-3000:])
        time.sleep(0.5)
    assert job["state"] == "cancelled", job
    assert job["reason"] == "culled after 3s idle"
    home = lab.workspaces / "chem" / "home" / "carol"
    assert (home / "kept.txt").read_text() == "still here"
    # Its time is accounted as a job's.
    usage = lab.server.json("usage", "--tenant", "chem", token=lab.carol)
    assert [(r["user"], r["jobs"]) for r in usage["rows"]] == [("carol", 1)]
    assert usage["rows"][0]["wall_s"] >= 3
    # Alice's notebook, in a tenant with the default hour, is left alone.
    listed = lab.server.json("notebook", "list", token=lab.alice)
    assert all(n["state"] == "running" for n in listed), listed
