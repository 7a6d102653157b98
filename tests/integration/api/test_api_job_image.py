"""`image` on a job, at the edge: refused naming the field when this server has no images
(no virtual-cluster runtime), never a traceback; and shown on the job when absent."""

from __future__ import annotations

from support.platform import Platform

JOBS = "/api/v1/jobs"


def test_an_image_needs_a_server_with_images(platform: Platform) -> None:
    platform.tenant("physics")
    alice = platform.user("alice", "physics")
    body = {"type": "job", "command": ["true"], "image": "alpine"}
    refused = platform.call("POST", JOBS, alice, json=body)
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "image"
    bad = platform.call("POST", JOBS, alice, json={**body, "image": "Not_A_Name"})
    assert bad.status_code == 422 and bad.json()["field"] == "image", bad.text
    job = platform.ok("POST", JOBS, alice, json={"type": "job", "command": ["true"]})
    assert job["image"] is None
