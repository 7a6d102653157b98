"""Sites through the API: who may add them, and bad input refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.platform import Platform

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def site(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {"name": "hpc", "login": "u@127.0.0.1:1", "identity": KEY}
    body.update(fields)
    return body


def test_only_administrators_add_sites(platform: Platform) -> None:
    platform.tenant("physics")
    token = platform.user("alice", "physics", role="owner")
    response = platform.call("POST", "/api/v1/sites", token, json=site())
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "HPC"}, "name"),
        ({"login": "no-user-here"}, "login"),
        ({"local": True}, "login"),
        ({"identity": "not a key"}, "identity"),
        ({"partition": "bad partition"}, "partition"),
        ({"account_map": {"physics": "no spaces"}}, "account_map"),
    ],
)
def test_bad_sites_are_refused_naming_the_field(
    platform: Platform, fields: dict[str, object], field: str
) -> None:
    response = platform.call("POST", "/api/v1/sites", json=site(**fields))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_an_unreachable_login_node_is_refused_and_leaves_no_key(platform: Platform) -> None:
    response = platform.call(
        "POST", "/api/v1/sites", json=site(known_hosts="[127.0.0.1]:1 ssh-ed25519 AAAA\n")
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "login"
    assert "hpc" in response.json()["message"]
    keys = Path(platform.state_dir) / "sites"
    assert not list(keys.glob("*.key")) if keys.exists() else True
    assert platform.ok("GET", "/api/v1/sites") == []


def test_jobs_name_only_sites_that_exist(platform: Platform) -> None:
    platform.tenant("physics")
    response = platform.call(
        "POST", "/api/v1/jobs", json={"command": ["true"], "tenant": "physics", "site": "nowhere"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "site"
    unknown = platform.call("GET", "/api/v1/sites/nowhere")
    assert unknown.status_code == 404
