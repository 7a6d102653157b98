"""Datasets and a real Slurm site: jobs run where their data is, or wait for a copy (rsync
over the site's SSH, as its login user) and read it there."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import SlurmDev
from support.platform import Platform
from virtuai.store.models import JobEventRow

pytestmark = pytest.mark.root


def events(p: Platform, job_id: int) -> list[tuple[str, str]]:
    """(to_state, reason) of the job's events, in order."""
    with p.sessions() as session:
        rows = session.execute(
            select(JobEventRow.to_state, JobEventRow.reason)
            .where(JobEventRow.job_id == job_id)
            .order_by(JobEventRow.id)
        ).all()
    return [(state, reason) for state, reason in rows]


def test_a_job_with_data_on_the_site_runs_there_and_finds_it(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    where = f"/home/vsdlab/ds-{uuid.uuid4().hex[:8]}"
    slurm.ssh(f"mkdir -p {where} && echo measured > {where}/in.txt")
    try:
        p.ok(
            "POST",
            "/api/v1/datasets",
            json={"tenant": "physics", "name": "runs", "site": "vsd", "path": where},
        )
        # No --site: the data decides.
        job = p.submit(
            p.admin_token,
            ["bash", "-c", 'cat "$VIRTUAI_DATA/in.txt"; hostname'],
            tenant="physics",
            data="runs",
            time="2m",
        )
        assert job["site"] == "vsd" and job["data"] == "runs" and not job["stage"]
        done = p.wait_for([job["id"]], timeout=60)[job["id"]]
        assert done["state"] == "succeeded", done
        assert p.logs(job["id"]).startswith("measured\nvsd-n")
        # Elsewhere only with a copy, and copies are not made from a site.
        refused = p.call(
            "POST",
            "/api/v1/jobs",
            json={
                "command": ["true"],
                "tenant": "physics",
                "data": "runs",
                "stage": True,
                "site": "nosuch",
            },
        )
        assert refused.status_code == 422 and refused.json()["field"] == "site"
    finally:
        slurm.ssh(f"rm -rf {where}")


def test_stage_copies_local_data_to_the_site_before_the_job_starts(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    data = p.state_dir / "workspaces" / "physics" / "inputs"
    data.mkdir(parents=True)
    blob = os.urandom(8 * 2**20)
    (data / "big.bin").write_bytes(blob)
    (data / "note.txt").write_text("first\n")
    p.ok(
        "POST", "/api/v1/datasets", json={"tenant": "physics", "name": "inputs", "path": str(data)}
    )
    read = 'md5sum < "$VIRTUAI_DATA/big.bin"; cat "$VIRTUAI_DATA/note.txt"; echo "$VIRTUAI_DATA"'
    job = p.submit(
        p.admin_token,
        ["bash", "-c", read],
        tenant="physics",
        site="vsd",
        data="inputs",
        stage=True,
        time="2m",
    )
    assert job["stage"] and job["state"] == "pending"
    p.tick()
    assert p.job(job["id"])["reason"].startswith("staging data inputs to site vsd")
    done = p.wait_for([job["id"]], timeout=90)[job["id"]]
    assert done["state"] == "succeeded", done
    digest, note, path = p.logs(job["id"]).split("\n")[:3]
    assert digest.split()[0] == hashlib.md5(blob).hexdigest()
    assert note == "first" and path == "/home/vsdlab/virtuai/data/physics/inputs"
    # Copied as the site's login user, with rsync's progress kept.
    assert slurm.ssh(f"stat -c %U {path}/big.bin").strip() == "vsdlab"
    copy = p.ok("GET", "/api/v1/datasets/inputs", params={"tenant": "physics"})["copies"][0]
    assert copy["state"] == "ready" and copy["progress"].startswith("100%"), copy
    said = events(p, job["id"])
    staging = said.index(("pending", "staging data inputs to site vsd"))
    staged = said.index(("pending", f"data inputs staged to vsd:{path}"))
    admitted = [n for n, (state, _) in enumerate(said) if state == "admitted"]
    assert staging < staged < admitted[0], said

    # A later job never reads data older than itself: its submission copies again.
    (data / "note.txt").write_text("second\n")
    again = p.submit(
        p.admin_token,
        ["bash", "-c", 'cat "$VIRTUAI_DATA/note.txt"'],
        tenant="physics",
        site="vsd",
        data="inputs",
        stage=True,
        time="2m",
    )
    done = p.wait_for([again["id"]], timeout=90)[again["id"]]
    assert done["state"] == "succeeded", done
    assert p.logs(again["id"]).strip() == "second"
    slurm.ssh("rm -rf /home/vsdlab/virtuai/data/physics")


def test_a_failed_copy_fails_the_job_with_rsyncs_words(
    site_platform: Platform, slurm: SlurmDev, tmp_path: Path
) -> None:
    p = site_platform
    data = p.state_dir / "workspaces" / "physics" / "gone"
    data.mkdir(parents=True)
    (data / "x").write_text("x")
    p.ok("POST", "/api/v1/datasets", json={"tenant": "physics", "name": "gone", "path": str(data)})
    # The copy cannot be written on the site: a file stands where its directory goes.
    slurm.ssh("mkdir -p virtuai/data/physics && touch virtuai/data/physics/gone")
    try:
        job = p.submit(
            p.admin_token,
            ["true"],
            tenant="physics",
            site="vsd",
            data="gone",
            stage=True,
            time="1m",
        )
        done = p.wait_for([job["id"]], timeout=60)[job["id"]]
        assert done["state"] == "failed"
        assert done["reason"].startswith("staging data gone to site vsd failed: "), done
        assert "rsync" in done["reason"]
    finally:
        slurm.ssh("rm -rf virtuai/data/physics/gone")


def test_a_restart_during_a_copy_copies_again_and_says_so_once(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    data = p.state_dir / "workspaces" / "physics" / "resumed"
    data.mkdir(parents=True)
    blob = os.urandom(4 * 2**20)
    (data / "part.bin").write_bytes(blob)
    p.ok(
        "POST",
        "/api/v1/datasets",
        json={"tenant": "physics", "name": "resumed", "path": str(data)},
    )
    job = p.submit(
        p.admin_token,
        ["bash", "-c", 'md5sum < "$VIRTUAI_DATA/part.bin"'],
        tenant="physics",
        site="vsd",
        data="resumed",
        stage=True,
        time="2m",
    )
    p.tick()  # the copy has started; then the server is gone (its rsync with it, or not)
    restarted = p.restarted()
    try:
        done = restarted.wait_for([job["id"]], timeout=90)[job["id"]]
        assert done["state"] == "succeeded", done
        assert restarted.logs(job["id"]).split()[0] == hashlib.md5(blob).hexdigest()
        said = [reason for _, reason in events(restarted, job["id"])]
        assert said.count("staging data resumed to site vsd") == 1, said
    finally:
        restarted.sites.close()
        slurm.ssh("rm -rf /home/vsdlab/virtuai/data/physics/resumed")
