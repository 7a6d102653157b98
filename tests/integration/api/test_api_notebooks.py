"""``/api/v1/notebooks``: what is recorded and refused (no process starts here; the real
JupyterLab behind the proxy is ``tests/e2e/test_e2e_notebooks.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from support.platform import Platform
from virtuai.store.db import transaction
from virtuai.store.models import EnvironmentRow
from virtuai.store.tenancy import get_tenant_row

NOTEBOOKS = "/api/v1/notebooks"


def _members(platform: Platform) -> tuple[str, str, str, str]:
    platform.tenant("physics")
    platform.tenant("chem")
    return (
        platform.user("alice", "physics"),
        platform.user("bob", "physics"),
        platform.user("olga", "physics", role="owner"),
        platform.user("carol", "chem"),
    )


def test_the_first_start_records_the_default_environment_and_waits_for_it(
    platform: Platform,
) -> None:
    alice, *_ = _members(platform)
    for _ in range(2):
        refused = platform.call("POST", NOTEBOOKS, alice, json={})
        assert refused.status_code == 409, refused.text
        assert refused.json()["field"] == "environment"
    envs = platform.ok("GET", "/api/v1/environments", alice)
    assert [(e["name"], e["state"], e["requirements"]) for e in envs] == [
        ("notebook", "building", "jupyterlab\n")
    ]
    assert platform.ok("GET", "/api/v1/jobs", alice) == []
    named = platform.call("POST", NOTEBOOKS, alice, json={"environment": "nothing"})
    assert named.status_code == 422
    assert named.json()["field"] == "environment"


def test_a_notebook_is_a_job_its_owner_and_tenant_owners_control(platform: Platform) -> None:
    assert platform.context.notebooks is not None
    platform.context.notebooks = dataclasses.replace(
        platform.context.notebooks, python="/usr/bin/python3"
    )
    alice, bob, olga, carol = _members(platform)
    started = platform.ok(
        "POST", NOTEBOOKS, alice, json={"resources": {"cpu": "500m", "memory": "512Mi"}}
    )
    assert (started["name"], started["user"], started["path"]) == (
        "lab",
        "alice",
        "/user/alice/lab/",
    )
    assert started["idle_timeout"] == 3600
    assert started["time_limit"] == 8 * 3600
    jobs = platform.ok("GET", "/api/v1/jobs", alice)
    assert [(j["id"], j["kind"], j["name"]) for j in jobs] == [(started["id"], "notebook", "lab")]

    again = platform.call("POST", NOTEBOOKS, alice, json={})
    assert (again.status_code, again.json()["field"]) == (409, "name")
    in_vc = platform.call("POST", NOTEBOOKS, alice, json={"name": "x", "vc": "c1"})
    assert (in_vc.status_code, in_vc.json()["field"]) == (422, "vc")

    # Bob has none of his own; he sees Alice's through the tenant, Carol does not.
    assert platform.ok("GET", NOTEBOOKS, bob) == []
    assert [n["user"] for n in platform.ok("GET", NOTEBOOKS, bob, params={"all": True})] == [
        "alice"
    ]
    of_alice = {"user": "alice"}
    assert platform.call("GET", f"{NOTEBOOKS}/lab", carol, params=of_alice).status_code == 404
    assert platform.call("DELETE", f"{NOTEBOOKS}/lab", bob, params=of_alice).status_code == 403

    stopped = platform.ok("DELETE", f"{NOTEBOOKS}/lab", olga, params=of_alice)
    assert stopped["state"] == "cancelled"  # it had not started: it ends at once
    assert platform.ok("GET", NOTEBOOKS, alice) == []
    assert (
        platform.ok("GET", NOTEBOOKS, alice, params={"finished": True})[0]["state"] == "cancelled"
    )
    # The name is free again.
    assert platform.ok("POST", NOTEBOOKS, alice, json={})["state"] == "pending"


def test_a_tenant_sets_its_idle_timeout(platform: Platform) -> None:
    _members(platform)
    updated = platform.ok("PATCH", "/api/v1/tenants/physics", json={"notebook_idle_timeout": "30m"})
    assert updated["notebook_idle_timeout"] == 1800
    bad = platform.call("PATCH", "/api/v1/tenants/physics", json={"notebook_idle_timeout": "x"})
    assert bad.status_code == 422


def test_an_environment_without_jupyterlab_is_refused_naming_it(
    platform: Platform, tmp_path: Path
) -> None:
    """Accepted, the notebook would start and fail at once (ModuleNotFoundError)."""
    alice, *_ = _members(platform)
    for name, packages in (("bare", ["numpy"]), ("lab", ["jupyter_server", "jupyterlab"])):
        site = tmp_path / name / "lib" / "python3.11" / "site-packages"
        for package in packages:
            (site / package).mkdir(parents=True)
        with transaction(platform.sessions) as session:
            tenant = get_tenant_row(session, "physics")
            now = platform.context.clock.now()
            session.add(
                EnvironmentRow(
                    tenant_id=tenant.id, name=name, kind="pip", requirements="",
                    python="3.11", digest=name * 8, state="ready", reason="",
                    path=str(tmp_path / name), created_at=now, updated_at=now, ready_at=now,
                )
            )  # fmt: skip
    refused = platform.call("POST", NOTEBOOKS, alice, json={"name": "x", "environment": "bare"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "environment"
    assert "no JupyterLab" in refused.json()["message"]
    started = platform.call("POST", NOTEBOOKS, alice, json={"name": "y", "environment": "lab"})
    assert started.status_code < 300, started.text
