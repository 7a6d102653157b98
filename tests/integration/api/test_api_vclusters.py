"""Virtual clusters through the API, the loops, the runtime and the kernel: nothing is faked.

Every cluster here is real (network namespaces, bridges, overlays, cgroups,
nftables) and made by a runtime with a prefix of its own; after each test
every cluster is deleted through the API and no kernel object may be left.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import WebSocketDenialResponse

from support.platform import (
    TEST_USER_PREFIX,
    Platform,
    driver_settings_for_tests,
    public_dir,
    remove_state,
)
from support.vclusters import can_run_vcs, close_runtime, free_pool, make_runtime
from virtuai import execwire
from virtuai.server.up import vc_runtime
from virtuai.services.vclusters import VcOptions
from virtuai.settings import Settings
from virtuai.store.db import create_db_engine, make_session_factory
from virtuai.store.migrate import migrate
from virtuai.vcruntime import VcRuntime, host

pytestmark = pytest.mark.skipif(can_run_vcs() is not None, reason=str(can_run_vcs()))

SMALL = {"cpu": 0.5, "memory": "256Mi"}

# Rank 0 listens on its node's address; rank 1 connects to MASTER_ADDR and prints the answer.
RENDEZVOUS = """
import os, socket, time
rank, port = int(os.environ["RANK"]), int(os.environ["MASTER_PORT"])
hosts = open(os.environ["VIRTUAI_HOSTFILE"]).read().split()
print(socket.gethostname(), os.getcwd(), os.getuid(), len(hosts) // 2, flush=True)
if rank == 0:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((os.environ["VIRTUAI_NODE_ADDRESS"], port))
    s.listen()
    c, _ = s.accept()
    c.sendall(b"hello from " + socket.gethostname().encode())
    c.close()
else:
    for _ in range(200):
        try:
            c = socket.create_connection((os.environ["MASTER_ADDR"], port), timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    print(c.recv(100).decode())
"""

# Checkpoints into /shared when told to (USR1), and resumes from the checkpoint when started again.
CHECKPOINTING = """
f=/shared/ckpt-$VIRTUAI_JOB_ID
n=$VIRTUAI_RESTART_COUNT
if [ -e "$f" ]; then echo "resumed from $(cat "$f") on $(hostname) after $n restart(s)"; exit 0; fi
trap 'echo step-7 > "$f"; exit 0' USR1
echo started; while :; do sleep 0.1; done
"""


@pytest.fixture(scope="module")
def runtime() -> Iterator[VcRuntime]:
    rt = make_runtime(TEST_USER_PREFIX)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward")
    was = forwarding.read_text()
    yield rt
    forwarding.write_text(was)
    close_runtime(rt)


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(f"sqlite:///{tmp_path}/virtuai.db")
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


def make_platform(sessions: sessionmaker[Session], runtime: VcRuntime) -> Iterator[Platform]:
    state = public_dir("vai-vcapi-")
    options = VcOptions(subnet_pool=free_pool(), subnet_prefixlen=24, exec_timeout_s=60)
    platform = Platform(
        sessions,
        state,
        driver_settings=driver_settings_for_tests(),
        vcs=runtime,
        vc_options=options,
    )
    yield platform
    for vc in platform.ok("GET", "/api/v1/vcs"):
        if vc["state"] not in ("deleted", "deleting"):
            platform.call("DELETE", f"/api/v1/vcs/{vc['name']}", params={"tenant": vc["tenant"]})
    active = [
        j["id"]
        for j in platform.ok("GET", "/api/v1/jobs", params={"limit": 10_000})
        if j["state"] not in ("succeeded", "failed", "cancelled", "timed_out", "preempted")
    ]
    for job_id in active:
        platform.call("POST", f"/api/v1/jobs/{job_id}/cancel")
    if active:
        platform.wait_for(active)
    deadline = time.monotonic() + 30
    while any(v["state"] != "deleted" for v in platform.ok("GET", "/api/v1/vcs?all=true")):
        assert time.monotonic() < deadline, platform.ok("GET", "/api/v1/vcs?all=true")
        platform.tick()
    left = [o.describe() for o in runtime.inventory()]
    tenants = [t["name"] for t in platform.ok("GET", "/api/v1/tenants")]
    remove_state(state, tenants)
    if platform.driver.cgroups is not None:  # the local driver's parent cgroup, now empty
        for root in set(platform.driver.cgroups.roots.values()):
            (Path(root) / platform.driver.cgroups.parent).rmdir()
    assert not left, f"kernel objects left behind: {left}"


@pytest.fixture
def platform(sqlite_sessions: sessionmaker[Session], runtime: VcRuntime) -> Iterator[Platform]:
    yield from make_platform(sqlite_sessions, runtime)


@pytest.fixture
def any_db_platform(
    session_factory: sessionmaker[Session], runtime: VcRuntime
) -> Iterator[Platform]:
    """On SQLite and on PostgreSQL."""
    yield from make_platform(session_factory, runtime)


# -- helpers ------------------------------------------------------------------------------------


def create(platform: Platform, token: str, name: str, nodes: int, **fields: Any) -> Any:
    body = {"name": name, "nodes": nodes, "resources": fields.pop("resources", SMALL), **fields}
    return platform.call("POST", "/api/v1/vcs", token, json=body)


def show(platform: Platform, name: str, token: str | None = None) -> dict[str, Any]:
    vc: dict[str, Any] = platform.ok("GET", f"/api/v1/vcs/{name}", token)
    return vc


def wait_vc(platform: Platform, name: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        platform.tick()
        vc = show(platform, name)
        if vc["state"] in states:
            return vc
        assert time.monotonic() < deadline, f"timed out waiting for {states}: {vc}"
        time.sleep(0.05)


def run(
    platform: Platform, name: str, command: list[str], token: str | None = None, node: int = 0
) -> tuple[int, str, str]:
    """``vc exec``: the exit status and both streams, read from the framed answer."""
    response = platform.call(
        "POST", f"/api/v1/vcs/{name}/exec", token, json={"command": command, "node": node}
    )
    assert response.status_code == 200, response.text
    out, err, code = b"", b"", None
    for line in response.text.splitlines():
        frame = json.loads(line)
        if "exit_code" in frame:
            code = frame["exit_code"]
        elif frame["stream"] == "stdout":
            out += base64.b64decode(frame["data"])
        else:
            err += base64.b64decode(frame["data"])
    assert code is not None
    return code, out.decode(), err.decode()


def used_cpu(platform: Platform, tenant: str) -> float:
    cpu: float = platform.ok("GET", f"/api/v1/tenants/{tenant}")["usage"]["cpu"]
    return cpu


# -- tests --------------------------------------------------------------------------------------


def test_a_cluster_is_admitted_built_and_commands_run_in_its_nodes(
    any_db_platform: Platform, runtime: VcRuntime
) -> None:
    platform = any_db_platform
    platform.tenant("physics", cpu=4, memory="4Gi")
    platform.tenant("biology")
    alice = platform.user("alice", "physics")
    viewer = platform.user("vera", "physics", role="viewer")
    bob = platform.user("bob", "biology")

    created = create(platform, alice, "lab", 2)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "creating"
    vc = wait_vc(platform, "lab", {"running"})
    assert [(n["hostname"], n["state"], n["host"]) for n in vc["nodes"]] == [
        ("lab-0", "running", "node-1"),
        ("lab-1", "running", "node-1"),
    ]
    subnet = vc["subnet"].rsplit(".", 1)[0]
    assert [n["address"] for n in vc["nodes"]] == [f"{subnet}.2", f"{subnet}.3"]
    assert [e["to_state"] for e in vc["events"]] == ["creating", "creating", "running"]
    assert used_cpu(platform, "physics") == 1.0  # the cluster's nodes hold the tenant's quota
    node = platform.ok("GET", "/api/v1/nodes")[0]
    assert node["allocated"]["cpu"] == 1.0

    code, out, err = run(
        platform, "lab", ["sh", "-c", "hostname; id -u; echo oops >&2; exit 3"], alice, 1
    )
    assert (code, err) == (3, "oops\n")
    hostname, uid = out.split()
    assert hostname == "lab-1" and uid != "0"  # the tenant's unprivileged user

    # Another tenant's users cannot even see it; viewers see it but cannot act.
    for method, path in (
        ("GET", "/api/v1/vcs/lab"),
        ("POST", "/api/v1/vcs/lab/exec"),
        ("POST", "/api/v1/vcs/lab/suspend"),
        ("DELETE", "/api/v1/vcs/lab"),
    ):
        body = {"command": ["true"]} if path.endswith("exec") else None
        assert platform.call(method, path, bob, json=body).status_code == 404, path
    assert show(platform, "lab", viewer)["state"] == "running"
    assert platform.call("POST", "/api/v1/vcs/lab/suspend", viewer).status_code == 403
    refused = platform.call("POST", "/api/v1/vcs/lab/exec", viewer, json={"command": ["true"]})
    assert refused.status_code == 403
    assert [v["name"] for v in platform.ok("GET", "/api/v1/vcs", bob)] == []
    assert create(platform, alice, "lab", 1).status_code == 409  # one live "lab" per tenant

    # The WebSocket of `vc exec -it`: refused before the handshake like the POST above.
    for token, status in ((bob, 404), (viewer, 403), (None, 401)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            platform.http.websocket_connect("/api/v1/vcs/lab/exec/ws", headers=headers),
        ):
            pass
        assert denied.value.status_code == status, denied.value.text
    # Input goes in (EOF closes it), output comes out, then the exit status.
    auth = {"Authorization": f"Bearer {alice}"}
    with platform.http.websocket_connect("/api/v1/vcs/lab/exec/ws?node=1", headers=auth) as ws:
        ws.send_text(json.dumps({"command": ["sh", "-c", "cat; exit 5"], "stdin": True}))
        ws.send_bytes(execwire.frame(execwire.STDIN, b"\x00piped\xff"))
        ws.send_bytes(execwire.frame(execwire.STDIN))
        frames = [execwire.split(ws.receive_bytes())]
        while frames[-1][0] != execwire.STATUS:
            frames.append(execwire.split(ws.receive_bytes()))
    out = b"".join(p for c, p in frames if c == execwire.STDOUT)
    assert (out, json.loads(frames[-1][1])["exit_code"]) == (b"\x00piped\xff", 5)
    # A bad start message is a clear error naming the field, on the socket.
    with platform.http.websocket_connect("/api/v1/vcs/lab/exec/ws", headers=auth) as ws:
        ws.send_text(json.dumps({"command": ["true"], "rows": 0}))
        channel, payload = execwire.split(ws.receive_bytes())
    assert channel == execwire.STATUS
    assert json.loads(payload)["error"]["field"] == "rows"


def test_a_cluster_is_admitted_all_or_nothing_within_its_quota(
    platform: Platform, runtime: VcRuntime
) -> None:
    platform.tenant("physics", cpu=1, memory="4Gi")
    alice = platform.user("alice", "physics")
    never = create(platform, alice, "huge", 3)  # 1.5 CPUs: more than the quota, ever
    assert never.status_code == 422 and "can never run" in never.json()["message"]

    create(platform, alice, "first", 2)
    first = wait_vc(platform, "first", {"running"})
    assert create(platform, alice, "second", 2).status_code == 201
    platform.tick()
    second = show(platform, "second")
    assert second["state"] == "creating"
    assert second["reason"].startswith("waiting for quota"), second["reason"]
    assert all(n["host"] is None and n["state"] == "pending" for n in second["nodes"])
    assert len(runtime.list_vcs()) == 1  # nothing of the second was built

    # Deleting the first gives its quota back: the second is admitted whole.
    runtime_id = runtime.list_vcs()[0]
    assert platform.ok("DELETE", "/api/v1/vcs/first", alice)["state"] == "deleting"
    wait_vc(platform, "second", {"running"})
    gone = platform.ok("GET", "/api/v1/vcs?all=true")
    assert {v["name"]: v["state"] for v in gone} == {"first": "deleted", "second": "running"}
    assert runtime.objects_of(runtime_id) == []
    assert not runtime.paths(runtime_id).dir.exists()
    assert first["subnet"] != show(platform, "second")["subnet"]
    # The name is free again once deleted.
    assert (
        create(platform, alice, "first", 1, resources={"cpu": 0.1, "memory": "64Mi"}).status_code
        == 201
    )


def test_a_job_in_a_cluster_runs_one_task_per_node_and_ranks_meet(
    platform: Platform, runtime: VcRuntime
) -> None:
    platform.tenant("physics", cpu=2, memory="2Gi")
    alice = platform.user("alice", "physics")
    create(platform, alice, "mpi", 2, resources={"cpu": 1, "memory": "512Mi"})
    vc = wait_vc(platform, "mpi", {"running"})
    too_many = platform.call(
        "POST", "/api/v1/jobs", alice, json={"command": ["true"], "vc": "mpi", "tasks": 3}
    )
    assert too_many.status_code == 422, too_many.text

    job = platform.ok(
        "POST", "/api/v1/jobs", alice, json={"command": ["python3", "-c", RENDEZVOUS], "vc": "mpi"}
    )
    assert (job["vc"], job["tasks"], job["resources"]["cpu"]) == ("mpi", 2, 1.0)
    platform.tick()
    # The job holds the cluster's nodes, not the tenant's quota again.
    assert used_cpu(platform, "physics") == 2.0
    done = platform.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "succeeded", (done, platform.logs(job["id"], 1, "stderr"))
    assert sorted(p["node"] for p in done["placement"]) == ["mpi-0", "mpi-1"]
    first = platform.logs(job["id"], 0).split()
    second = platform.logs(job["id"], 1).splitlines()
    assert first[0] == "mpi-0" and first[1] == "/shared" and first[2] != "0" and first[3] == "2"
    assert second[0].split()[0] == "mpi-1"
    assert second[1] == "hello from mpi-0"
    addresses = {n["hostname"]: n["address"] for n in vc["nodes"]}
    env = platform.ok(
        "POST",
        "/api/v1/jobs",
        alice,
        json={
            "command": ["sh", "-c", "echo $MASTER_ADDR $VIRTUAI_HOSTFILE"],
            "vc": "mpi",
            "tasks": 1,
        },
    )
    platform.wait_for([env["id"]])
    assert platform.logs(env["id"]).split()[0] == addresses["mpi-0"]


def test_suspend_checkpoints_jobs_and_resume_remaps_with_disks_kept(
    platform: Platform, runtime: VcRuntime
) -> None:
    platform.tenant("physics", cpu=4, memory="4Gi", gpu=2)
    alice = platform.user("alice", "physics")
    create(platform, alice, "gpus", 1, resources={"cpu": 1, "memory": "256Mi", "gpu": 1})
    before = wait_vc(platform, "gpus", {"running"})["nodes"][0]["gpu_indices"]
    assert (
        run(platform, "gpus", ["sh", "-c", "echo data > /shared/f; echo root > /var/tmp/g"], alice)[
            0
        ]
        == 0
    )
    job = platform.ok(
        "POST",
        "/api/v1/jobs",
        alice,
        json={"command": ["sh", "-c", CHECKPOINTING], "vc": "gpus", "signal": "USR1@10"},
    )
    platform.wait_for([job["id"]], states={"running"})
    while "started" not in platform.logs(job["id"]):
        time.sleep(0.05)

    assert platform.ok("POST", "/api/v1/vcs/gpus/suspend", alice)["state"] == "suspending"
    suspended = wait_vc(platform, "gpus", {"suspended"})
    assert [n["state"] for n in suspended["nodes"]] == ["stopped"]
    assert suspended["nodes"][0]["host"] is None  # its placement went back to the pool
    assert used_cpu(platform, "physics") == 0.0
    requeued = platform.job(job["id"])
    assert requeued["state"] == "pending" and requeued["restart_count"] == 1
    assert requeued["reason"] == "waiting for virtual cluster gpus to run (it is suspended)"
    preempting = [e for e in requeued["events"] if e["to_state"] == "preempting"]
    assert preempting[0]["reason"] == "virtual cluster gpus is being suspended"
    assert [o.kind.value for o in runtime.objects_of(runtime.list_vcs()[0])] == ["dir"]
    assert platform.vcs is not None
    platform.vcs.reconcile()  # a suspended cluster stays as it is
    assert show(platform, "gpus")["reason"] == suspended["reason"]
    assert [o.kind.value for o in runtime.objects_of(runtime.list_vcs()[0])] == ["dir"]

    # Meanwhile a job takes the GPU the cluster had: it comes back on the other one.
    blocker = platform.submit(
        alice, ["sleep", "60"], resources={"cpu": 0.1, "memory": "16Mi", "gpu": 1}
    )
    platform.wait_for([blocker["id"]], states={"running"})
    assert platform.job(blocker["id"])["placement"][0]["gpu_indices"] == before
    platform.ok("POST", "/api/v1/vcs/gpus/resume", alice)
    after = wait_vc(platform, "gpus", {"running"})["nodes"][0]["gpu_indices"]
    assert after != before and len(after) == 1
    code, out, _ = run(
        platform,
        "gpus",
        ["sh", "-c", "cat /shared/f /var/tmp/g; echo $CUDA_VISIBLE_DEVICES"],
        alice,
    )
    assert (code, out.split()) == (0, ["data", "root", str(after[0])])
    done = platform.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "succeeded"
    assert platform.logs(job["id"]) == "resumed from step-7 on gpus-0 after 1 restart(s)\n"
    events = [e["to_state"] for e in show(platform, "gpus")["events"]]
    assert events[3:] == ["suspending", "suspended", "resuming", "resuming", "running"], events


def test_lost_kernel_objects_are_repaired_by_the_loop(
    platform: Platform, runtime: VcRuntime
) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    create(platform, alice, "fragile", 2)
    wait_vc(platform, "fragile", {"running"})
    runtime_id = runtime.list_vcs()[0]
    netns = runtime.names(runtime_id).netns(1)
    subprocess.run(["ip", "netns", "del", netns], check=True)
    # The server restarts (kill -9): its first tick reconciles every cluster.
    platform = platform.restarted()
    platform.tick()
    vc = show(platform, "fragile")
    assert [n["state"] for n in vc["nodes"]] == ["running", "running"], vc["nodes"]
    assert vc["reason"].startswith("repaired:") and "fragile-1" in vc["reason"]
    assert run(platform, "fragile", ["hostname"], alice, node=1)[1] == "fragile-1\n"
    # Lost again, repaired at the loop's next reconcile.
    subprocess.run(["ip", "netns", "del", netns], check=True)
    assert platform.vcs is not None
    platform.vcs.reconcile()
    assert show(platform, "fragile")["nodes"][1]["state"] == "running"


def test_doctor_lists_and_removes_leaked_objects(platform: Platform, runtime: VcRuntime) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    create(platform, alice, "kept", 1)
    wait_vc(platform, "kept", {"running"})
    assert platform.call("GET", "/api/v1/doctor", alice).status_code == 403
    report = platform.ok("GET", "/api/v1/doctor")
    assert (report["virtual_clusters"], report["leaked"]) == (True, [])

    leaked = f"{runtime.config.prefix}-deadbeef"  # a bridge of a cluster nobody knows
    subprocess.run(["ip", "link", "add", leaked, "type", "bridge"], check=True)
    try:
        report = platform.ok("GET", "/api/v1/doctor")
        assert [(o["kind"], o["name"]) for o in report["leaked"]] == [("bridge", leaked)]
        fixed = platform.ok("POST", "/api/v1/doctor/fix")
        assert [o["name"] for o in fixed["removed"]] == [leaked]
        assert (fixed["leaked"], fixed["errors"]) == ([], [])
        assert not Path(f"/sys/class/net/{leaked}").exists()
        assert show(platform, "kept")["state"] == "running"
        assert run(platform, "kept", ["true"], alice)[0] == 0
    finally:
        subprocess.run(["ip", "link", "del", leaked], capture_output=True, check=False)


def test_without_what_clusters_need_create_fails_at_once(
    platform: Platform, runtime: VcRuntime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    # What a server that is not root finds at start (the probe that fails first).
    monkeypatch.setattr(host, "probe_root", lambda: "virtual clusters need root; not root")
    platform.context.vcs = vc_runtime(Settings(home=tmp_path / "home"))
    refused = create(platform, alice, "nope", 1)
    assert refused.status_code == 409, refused.text  # not a server error: nothing failed
    assert refused.json()["code"] == "configuration"
    assert (
        refused.json()["message"]
        == "cannot run virtual clusters here: virtual clusters need root; not root"
    )
    assert platform.ok("GET", "/api/v1/vcs") == []
    assert platform.call("GET", "/api/v1/doctor").json()["virtual_clusters"] is False


def test_administrators_import_images_from_the_servers_machine(
    platform: Platform, runtime: VcRuntime, tmp_path: Path
) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    shutil.copy("/usr/bin/sleep", rootfs / "usr/bin/sleep")
    body = {"name": "tiny", "from_dir": str(rootfs)}
    assert platform.call("POST", "/api/v1/images", alice, json=body).status_code == 403
    relative = platform.call("POST", "/api/v1/images", json={"name": "x", "from_dir": "rootfs"})
    assert relative.status_code == 422
    image = platform.ok("POST", "/api/v1/images", json=body)
    assert (image["name"], image["builtin"], image["source"]) == ("tiny", False, f"dir:{rootfs}")
    listed = platform.ok("GET", "/api/v1/images", alice)
    assert [(i["name"], i["builtin"]) for i in listed] == [("host", True), ("tiny", False)]
    assert platform.call("DELETE", "/api/v1/images/tiny", alice).status_code == 403
    assert platform.call("DELETE", "/api/v1/images/tiny").status_code == 204
    assert [i["name"] for i in platform.ok("GET", "/api/v1/images")] == ["host"]


def test_the_subnet_allocator_skips_subnets_the_host_routes(
    platform: Platform, runtime: VcRuntime
) -> None:
    """A /24 of the pool already routed on the host (Docker, a VPN) is skipped, not failed on."""
    pool = ipaddress.ip_network(platform.vc_options.subnet_pool)
    first, second = list(pool.subnets(new_prefix=24))[:2]
    dummy = f"vaid{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", dummy, "type", "bridge"], check=True)  # as docker0
    try:
        subprocess.run(
            ["ip", "address", "add", f"{first.network_address + 7}/24", "dev", dummy], check=True
        )
        subprocess.run(["ip", "link", "set", dummy, "up"], check=True)
        platform.tenant("physics", cpu=4, memory="4Gi")
        alice = platform.user("alice", "physics")
        created = create(platform, alice, "lab", 1)
        assert created.status_code == 201, created.text
        assert created.json()["subnet"] == str(second)
        assert wait_vc(platform, "lab", {"running", "failed"})["state"] == "running"
    finally:
        subprocess.run(["ip", "link", "delete", dummy], check=False)
