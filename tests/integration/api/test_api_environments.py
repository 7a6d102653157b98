"""Python environments (issue #10 §2): real builds with venv + pip from a local wheel
directory (``--no-index --find-links``: no network), reuse of equal inputs, jobs that
import the environment's package, tenant isolation, deletion refused while in use, and
an interrupted build redone."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.platform import TEST_USER_PREFIX, Platform, public_dir
from support.wheels import GREETING, PACKAGE, make_wheel
from virtuai.control.environments import EnvBuildConfig, EnvBuilder
from virtuai.domain.pyenvs import READY_MARKER, EnvOptions
from virtuai.host.users import ensure_tenant_user

ENVS = "/api/v1/environments"
# Builds are the slow part and know nothing of the database: PostgreSQL runs the rest.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def wheels() -> Iterator[Path]:
    directory = public_dir("vai-wheels-")
    make_wheel(directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _requirements(wheels: Path) -> str:
    return f"--no-index\n--find-links {wheels}\n{PACKAGE}\n"


def _builder(platform: Platform) -> EnvBuilder:
    options = EnvOptions(
        workspaces_dir=platform.state_dir / "workspaces",
        logs_dir=platform.state_dir / "env-logs",
    )
    platform.context.environments = options
    return EnvBuilder(
        platform.sessions,
        platform.context.clock,
        EnvBuildConfig(options, user_prefix=TEST_USER_PREFIX),
    )


def _built(
    platform: Platform, builder: EnvBuilder, name: str, token: str | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        builder.tick()
        builder.wait_idle(5)
        env: dict[str, Any] = platform.ok("GET", f"{ENVS}/{name}", token)
        if env["state"] != "building":
            return env
        assert time.monotonic() < deadline, env
        time.sleep(0.05)


@pytest.fixture
def builder(platform: Platform) -> EnvBuilder:
    return _builder(platform)


@SQLITE_ONLY
def test_a_pip_environment_is_built_reused_and_used_by_jobs(
    platform: Platform, builder: EnvBuilder, wheels: Path
) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    req = _requirements(wheels)
    created = platform.ok("POST", ENVS, alice, json={"name": "hello", "requirements": req})
    assert created["state"] == "building" and created["tenant"] == "physics"

    # Not ready yet: a job naming it is refused, naming the field.
    early = platform.call(
        "POST", "/api/v1/jobs", alice, json={"command": ["true"], "environment": "hello"}
    )
    assert early.status_code == 422 and early.json()["field"] == "environment"
    assert "building" in early.json()["message"]

    env = _built(platform, builder, "hello", alice)
    log = platform.ok("GET", f"{ENVS}/hello/log", alice)
    assert env["state"] == "ready", (env["reason"], log["data"])
    path = Path(env["path"])
    assert path.name == env["digest"] and (path / READY_MARKER).exists()
    assert "installing the requirements" in log["data"] and log["state"] == "ready"
    marker_mtime = (path / READY_MARKER).stat().st_mtime_ns

    # The same inputs under another name: the same directory, not built again.
    platform.ok("POST", ENVS, alice, json={"name": "hello-again", "requirements": req})
    again = _built(platform, builder, "hello-again", alice)
    assert again["state"] == "ready" and again["path"] == env["path"]
    assert (path / READY_MARKER).stat().st_mtime_ns == marker_mtime
    again_log = platform.ok("GET", f"{ENVS}/hello-again/log", alice)["data"]
    assert "reusing the existing build" in again_log and "installing" not in again_log

    listed = platform.ok("GET", ENVS, alice)
    assert sorted(e["name"] for e in listed) == ["hello", "hello-again"]

    job = platform.submit(
        alice,
        ["sh", "-c", f"python -c 'import {PACKAGE}; print({PACKAGE}.greet())'; echo $VIRTUAL_ENV"],
        environment="hello",
    )
    assert job["environment"] == "hello"
    done = platform.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "succeeded", platform.logs(job["id"], stream="stderr")
    assert platform.logs(job["id"]).split("\n")[:2] == [GREETING, env["path"]]


def test_environments_are_tenant_scoped_and_not_deleted_while_in_use(
    platform: Platform, builder: EnvBuilder
) -> None:
    platform.tenant("physics")
    platform.tenant("chemistry")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "chemistry")
    platform.ok("POST", ENVS, alice, json={"name": "bare", "python": "3.11"})
    assert _built(platform, builder, "bare", alice)["state"] == "ready"

    # Another tenant sees nothing of it: not listed, 404 by name, refused for its jobs.
    assert platform.ok("GET", ENVS, bob) == []
    for method, path in (("GET", f"{ENVS}/bare"), ("GET", f"{ENVS}/bare/log")):
        assert platform.call(method, path, bob).status_code == 404
    assert platform.call("DELETE", f"{ENVS}/bare", bob).status_code == 404
    foreign = platform.call(
        "POST", "/api/v1/jobs", bob, json={"command": ["true"], "environment": "bare"}
    )
    assert foreign.status_code == 422 and foreign.json()["field"] == "environment"
    # A name already taken in the tenant is a conflict; bob may use it in his own.
    taken = platform.call("POST", ENVS, alice, json={"name": "bare", "python": "3.11"})
    assert taken.status_code == 409 and taken.json()["field"] == "name"

    job = platform.submit(alice, ["sleep", "30"], environment="bare")
    platform.wait_for([job["id"]], {"running"})
    refused = platform.call("DELETE", f"{ENVS}/bare", alice)
    assert refused.status_code == 409 and str(job["id"]) in refused.json()["message"]
    platform.ok("POST", f"/api/v1/jobs/{job['id']}/cancel", alice)
    platform.wait_for([job["id"]])
    # A service at zero replicas has no live job, but its next replica needs it.
    service = {"name": "web", "command": ["python", "-m", "http.server"], "environment": "bare"}
    platform.ok("POST", "/api/v1/services", alice, json={**service, "replicas": {"min": 0}})
    refused = platform.call("DELETE", f"{ENVS}/bare", alice)
    assert refused.status_code == 409 and "services web" in refused.json()["message"]
    assert refused.json()["field"] == "name"
    platform.ok("DELETE", "/api/v1/services/web", alice)  # deleting: no longer in the way

    path = Path(platform.ok("GET", f"{ENVS}/bare", alice)["path"])
    assert platform.call("DELETE", f"{ENVS}/bare", alice).status_code == 204
    assert platform.call("GET", f"{ENVS}/bare", alice).status_code == 404
    builder.collect()
    assert not path.exists()  # nobody names it any more: its directory is removed


def test_bad_inputs_are_refused_naming_the_field(platform: Platform, builder: EnvBuilder) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    cases = [
        ({"name": "x"}, "requirements"),
        ({"name": "x", "python": "python3"}, "python"),
        ({"name": "x", "pyproject": "not [toml"}, "pyproject"),
        ({"name": "x", "pyproject": "[tool.x]\n"}, "pyproject"),
        ({"name": "x", "requirements": "a", "pyproject": "[project]\n"}, "pyproject"),
        ({"name": "Bad_Name", "python": "3.11"}, "name"),
        ({"name": "x", "requirements": "a" * (256 * 1024 + 1)}, "requirements"),
    ]
    for body, field in cases:
        response = platform.call("POST", ENVS, alice, json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert field in response.text, (body, response.text)


@SQLITE_ONLY
def test_a_pyproject_environment_and_a_missing_python_fail_or_build_with_a_reason(
    platform: Platform, builder: EnvBuilder
) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    pyproject = '[project]\nname = "demo"\nversion = "1"\ndependencies = []\n'
    platform.ok("POST", ENVS, alice, json={"name": "proj", "pyproject": pyproject})
    assert _built(platform, builder, "proj", alice)["kind"] == "pyproject"
    platform.ok("POST", ENVS, alice, json={"name": "old", "python": "3.2"})
    failed = _built(platform, builder, "old", alice)
    assert failed["state"] == "failed" and "no Python 3.2" in failed["reason"]


@SQLITE_ONLY
def test_an_interrupted_build_is_done_again_after_a_restart(
    platform: Platform, wheels: Path
) -> None:
    """The server died mid-build: the row is still `building` and the directory is half made
    (no ready marker).  The next server's builder removes it and builds again."""
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    _builder(platform)  # the server that will "die" before its builder ran
    env = platform.ok(
        "POST", ENVS, alice, json={"name": "hello", "requirements": _requirements(wheels)}
    )
    half = Path(env["path"])
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "python").write_text("half written")
    if os.geteuid() == 0:  # made by the tenant's user, as a real build is
        uid, gid, _ = ensure_tenant_user("physics", TEST_USER_PREFIX)
        workspace = platform.state_dir / "workspaces" / "physics"
        for path in [workspace, *workspace.rglob("*")]:
            os.chown(path, uid, gid)

    restarted = platform.restarted()
    builder = _builder(restarted)
    done = _built(restarted, builder, "hello", alice)
    assert done["state"] == "ready", done
    assert (half / READY_MARKER).exists() and (half / "bin" / "python").is_symlink()
