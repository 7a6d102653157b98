"""Datasets through the API: tenant scoping, where paths may be, and jobs that read them."""

from __future__ import annotations

import pytest

from support.platform import Platform


def workspace_data(platform: Platform, tenant: str, name: str) -> str:
    path = platform.state_dir / "workspaces" / tenant / name
    path.mkdir(parents=True)
    path.chmod(0o755)
    (path / "in.txt").write_text("local data\n")
    (path / "in.txt").chmod(0o644)
    return str(path)


def test_a_job_with_local_data_runs_here_and_finds_it(platform: Platform) -> None:
    platform.tenant("physics")
    path = workspace_data(platform, "physics", "inputs")
    made = platform.ok(
        "POST", "/api/v1/datasets", json={"tenant": "physics", "name": "inputs", "path": path}
    )
    assert made["site"] is None and made["path"] == path and made["copies"] == []
    job = platform.submit(
        platform.admin_token,
        ["bash", "-c", 'cat "$VIRTUAI_DATA/in.txt"'],
        tenant="physics",
        data="inputs",
    )
    assert job["site"] is None and job["data"] == "inputs" and not job["stage"]
    done = platform.wait_for([job["id"]])[job["id"]]
    assert done["state"] == "succeeded", done
    assert platform.logs(job["id"]) == "local data\n"
    # --stage with nowhere else to go: it runs here, nothing is copied.
    staged = platform.submit(
        platform.admin_token, ["true"], tenant="physics", data="inputs", stage=True
    )
    assert staged["site"] is None and not staged["stage"]


def test_datasets_belong_to_their_tenant(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("chemistry")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "chemistry")
    path = workspace_data(platform, "physics", "inputs")
    platform.ok("POST", "/api/v1/datasets", alice, json={"name": "inputs", "path": path})
    again = platform.call("POST", "/api/v1/datasets", alice, json={"name": "inputs", "path": path})
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert [d["name"] for d in platform.ok("GET", "/api/v1/datasets", alice)] == ["inputs"]
    assert platform.ok("GET", "/api/v1/datasets", bob) == []
    hidden = platform.call("GET", "/api/v1/datasets/inputs", bob, params={"tenant": "physics"})
    assert hidden.status_code in (403, 404)
    # Nor can another tenant's job read it, nor add a dataset in someone else's workspace.
    used = platform.call("POST", "/api/v1/jobs", bob, json={"command": ["true"], "data": "inputs"})
    assert used.status_code == 404 and used.json()["field"] == "data"
    theirs = platform.call("POST", "/api/v1/datasets", bob, json={"name": "x", "path": path})
    assert theirs.status_code == 422 and theirs.json()["field"] == "path"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "path": "relative/path"}, "path"),
        ({"name": "x", "path": "/etc"}, "path"),  # not in the tenant's workspace
        ({"name": "x", "path": "/nonexistent/../etc"}, "path"),
        ({"name": "X", "path": "/tmp"}, "name"),
        ({"name": "x", "path": "/tmp", "site": "nosuch"}, "site"),
    ],
)
def test_bad_datasets_are_refused_naming_the_field(
    platform: Platform, body: dict[str, str], field: str
) -> None:
    platform.tenant("physics")
    response = platform.call("POST", "/api/v1/datasets", json={"tenant": "physics", **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_jobs_go_only_where_their_data_is_and_in_use_data_stays(platform: Platform) -> None:
    platform.tenant("physics")
    path = workspace_data(platform, "physics", "inputs")
    platform.ok(
        "POST", "/api/v1/datasets", json={"tenant": "physics", "name": "inputs", "path": path}
    )
    wrong = platform.call(
        "POST",
        "/api/v1/jobs",
        json={"command": ["true"], "tenant": "physics", "data": "inputs", "site": "hpc"},
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "site"
    assert "--stage" in wrong.json()["message"]
    alone = platform.call(
        "POST", "/api/v1/jobs", json={"command": ["true"], "tenant": "physics", "stage": True}
    )
    assert alone.status_code == 422 and alone.json()["field"] == "stage"
    job = platform.submit(platform.admin_token, ["sleep", "30"], tenant="physics", data="inputs")
    busy = platform.call("DELETE", "/api/v1/datasets/inputs", params={"tenant": "physics"})
    assert busy.status_code == 409
    platform.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
    platform.wait_for([job["id"]])
    gone = platform.call("DELETE", "/api/v1/datasets/inputs", params={"tenant": "physics"})
    assert gone.status_code == 204
    assert platform.ok("GET", "/api/v1/datasets", params={"tenant": "physics"}) == []
