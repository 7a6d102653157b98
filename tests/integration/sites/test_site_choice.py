"""Slurm's backlog (squeue --start) in the choice of site and in `plan`."""

from __future__ import annotations

import time

import pytest

from conftest import SlurmDev
from support.platform import Platform

pytestmark = pytest.mark.root


def test_slurms_expected_start_reaches_the_site_and_plan(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    idle = p.ok("GET", "/api/v1/sites/vsd")
    assert idle["expected_wait_s"] == 0, idle  # idle CPUs, nobody waiting
    # Another user holds every node for 2 minutes; one more job waits behind it.
    blocker = slurm.ssh("sbatch --parsable -N2 --exclusive -t 2 --wrap 'sleep 120'").strip()
    waiting = slurm.ssh("sbatch --parsable -N1 -t 1 --wrap true").strip()
    try:
        wait = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p.sites._inventory_at.clear()  # the inventory (with squeue --start) now
            p.sites.tick()
            wait = p.ok("GET", "/api/v1/sites/vsd")["expected_wait_s"]
            if wait:
                break
            time.sleep(1)
        assert wait is not None and 30 <= wait <= 130, wait
        # A gang of 2 x 3 CPUs (one 4-CPU node here): `any` goes to the site, and says why.
        body = {
            "command": ["true"],
            "tenant": "physics",
            "site": "any",
            "tasks": 2,
            "resources": {"cpu": 3, "memory": "64Mi"},
            "time": "5m",
        }
        answer = p.ok("POST", "/api/v1/jobs/plan", json=body)
        assert answer["site"] == "vsd", answer
        assert "Slurm's backlog: expected to start in" in answer["site_reason"]
        vsd = next(c for c in answer["candidates"] if c["site"] == "vsd")
        assert vsd["expected_wait_s"] == wait
    finally:
        slurm.ssh(f"scancel {blocker} {waiting}")
