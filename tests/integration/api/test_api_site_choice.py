"""--site any and `plan`: feasibility, quota and the expected start at each place.

The sites here are rows as the site loop records them (nodes from sinfo, the
backlog from squeue --start); no Slurm is asked, the choice reads only the
database.  tests/integration/sites runs jobs on a real one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from support.platform import Platform
from virtuai.domain.resources import Node, Resources
from virtuai.store.db import transaction
from virtuai.store.inventory import record_inventory
from virtuai.store.models import SiteRow

GIB = 2**30


def add_site(p: Platform, name: str, wait: int | None, max_time_s: int = 3600) -> None:
    now = dt.datetime.now(dt.UTC)
    with transaction(p.sessions) as session:
        session.add(
            SiteRow(
                name=name,
                token=name,
                login=f"u@{name}.invalid",
                partition="debug",
                pool=f"{name}:debug",
                partitions=[
                    {"name": "debug", "default": True, "max_time_s": max_time_s, "state": "up"}
                ],
                capacity={},
                health="ok",
                expected_wait_s=wait,
                created_at=now,
                updated_at=now,
            )
        )
        record_inventory(
            session,
            [
                Node(
                    name=f"{name}:n{i}",
                    pool=f"{name}:debug",
                    site=name,
                    capacity=Resources(64_000, 256 * GIB, 0),
                )
                for i in (1, 2)
            ],
            now,
        )


def plan(p: Platform, **fields: Any) -> dict[str, Any]:
    body = {
        "command": ["true"],
        "tenant": "physics",
        "site": "any",
        "resources": {"cpu": 1, "memory": "64Mi"},
        **fields,
    }
    answer: dict[str, Any] = p.ok("POST", "/api/v1/jobs/plan", json=body)
    return answer


def test_any_runs_here_when_it_starts_now_else_where_slurm_expects_it_soonest(
    platform: Platform,
) -> None:
    p = platform
    p.tenant("physics")
    add_site(p, "slow", wait=600)
    add_site(p, "quick", wait=30)
    here = plan(p)
    assert here["site"] is None and here["site_reason"].startswith("this platform's nodes")
    assert [c["site"] for c in here["candidates"]] == ["local", "quick", "slow"]
    assert [c["expected_wait_s"] for c in here["candidates"]] == [0, 30, 600]
    # Too big for any node here: the site with the shorter backlog.
    big = plan(p, resources={"cpu": 48, "memory": "1Gi"})
    assert big["site"] == "quick", big
    assert "Slurm's backlog: expected to start in 30 s" in big["site_reason"]
    local = big["candidates"][0]
    assert not local["feasible"] and local["expected_wait_s"] is None
    # The same choice is made at submit time.
    job = p.submit(
        p.admin_token,
        ["true"],
        tenant="physics",
        site="any",
        resources={"cpu": 48, "memory": "1Gi"},
    )
    assert job["site"] == "quick" and job["pool"] == "quick:debug"
    p.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")


def test_an_unknown_backlog_ranks_after_a_known_one_and_quota_after_both(
    platform: Platform,
) -> None:
    p = platform
    p.tenant("physics")
    add_site(p, "known", wait=900)
    add_site(p, "unknown", wait=None)
    assert plan(p, resources={"cpu": 48, "memory": "1Gi"})["site"] == "known"
    # No quota left at the known site: the other one, whose wait is unknown.
    p.ok("PUT", "/api/v1/tenants/physics/quota", json={"pool": "known:debug", "cpu": 0})
    choice = plan(p, resources={"cpu": 48, "memory": "1Gi"})
    assert choice["site"] == "unknown", choice
    known = next(c for c in choice["candidates"] if c["site"] == "known")
    assert not known["feasible"] or "quota" in known["why"], known


def test_a_partition_time_limit_rules_a_site_out(platform: Platform) -> None:
    p = platform
    p.tenant("physics")
    add_site(p, "short", wait=0, max_time_s=3600)
    choice = plan(p, resources={"cpu": 48, "memory": "1Gi"}, time="2h")
    short = next(c for c in choice["candidates"] if c["site"] == "short")
    assert not short["feasible"] and "partition debug" in short["why"], short
    pinned = p.call(
        "POST",
        "/api/v1/jobs",
        json={"command": ["true"], "tenant": "physics", "site": "short", "time": "2h"},
    )
    assert pinned.status_code == 422 and pinned.json()["field"] == "time"
