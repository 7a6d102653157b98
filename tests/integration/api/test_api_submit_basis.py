"""What a submit reads of its tenant, the quotas and the nodes is kept between
transactions (services/submitbasis.py): a change made here is seen by the very next
submit, a change made elsewhere within the cache's bound, and the common submit's
recorded job and answer are those of the ORM path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from support.platform import Platform
from virtuai.api.routers.jobs import _JOB, _job_fields, request_from_api
from virtuai.api.schemas.jobs import JobCreate, JobOut
from virtuai.auth.tokens import hash_token
from virtuai.domain.workload import DEFAULT_PRIORITY_CLASSES
from virtuai.server.up import policy_from_settings
from virtuai.services import jobs as service
from virtuai.services.planning import SchedulingRules
from virtuai.services.submitbasis import SubmitBasisCache, statement_changes
from virtuai.settings import SchedulerSettings
from virtuai.store.db import create_db_engine, read_transaction, transaction
from virtuai.store.inventory import record_inventory
from virtuai.store.lease import heartbeat
from virtuai.store.models import JobEventRow, JobRow, NodeRow, TenantRow

SMALL = {"command": ["true"], "resources": {"cpu": 0.1, "memory": "16Mi"}}


def test_a_change_made_here_is_seen_by_the_next_submit(platform: Platform) -> None:
    platform.tenant("physics", cpu=1, memory="1Gi")
    alice = platform.user("alice", "physics")
    platform.ok("POST", "/api/v1/jobs", alice, json=SMALL)  # the basis is kept now
    two_cpus = {**SMALL, "resources": {"cpu": 2, "memory": "16Mi"}}

    refused = platform.call("POST", "/api/v1/jobs", alice, json=two_cpus)
    assert refused.status_code == 422 and refused.json()["field"] == "resources"
    platform.ok("PUT", "/api/v1/tenants/physics/quota", json={"cpu": 4, "memory": "1Gi"})
    assert platform.call("POST", "/api/v1/jobs", alice, json=two_cpus).status_code == 201

    platform.ok("POST", "/api/v1/tenants/physics/disable")
    disabled = platform.call("POST", "/api/v1/jobs", alice, json=SMALL)
    assert disabled.status_code == 409 and disabled.json()["field"] == "tenant"
    platform.ok("POST", "/api/v1/tenants/physics/enable")
    assert platform.call("POST", "/api/v1/jobs", alice, json=SMALL).status_code == 201

    # A node's class changed here: targeting sees it at once.
    gpu_class = {**SMALL, "node_class": "gpu"}
    refused = platform.call("POST", "/api/v1/jobs", alice, json=gpu_class)
    assert refused.status_code == 422
    with transaction(platform.sessions) as session:
        session.execute(update(NodeRow).values(node_class="gpu"))
    assert platform.call("POST", "/api/v1/jobs", alice, json=gpu_class).status_code == 201


def _rules() -> SchedulingRules:
    return SchedulingRules(
        policy=policy_from_settings(SchedulerSettings()),
        priority_classes={p.name: p for p in DEFAULT_PRIORITY_CLASSES},
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _seed(sessions: sessionmaker[Session]) -> None:
    from virtuai.domain.resources import Node, Resources

    now = dt.datetime.now(dt.UTC)
    with transaction(sessions) as session:
        record_inventory(session, [Node("n1", "local", "local", Resources(4000, 2**32))], now)
        session.add(TenantRow(name="physics", created_at=now))


def test_a_change_made_elsewhere_is_seen_within_the_bound(
    session_factory: sessionmaker[Session], db_url: str
) -> None:
    _seed(session_factory)
    clock = _Clock()
    cache = SubmitBasisCache(_rules(), ttl_s=1.0, monotonic=clock)
    now = dt.datetime.now(dt.UTC)
    with transaction(session_factory) as session:
        first = cache.get(session, now)
    assert first.tenants["physics"].disabled_at is None
    # Another server (here: a connection of its own, no session of this process).
    other = create_db_engine(db_url)
    with other.begin() as connection:
        connection.execute(text("UPDATE tenants SET disabled_at = :now"), {"now": now})
    other.dispose()
    with transaction(session_factory) as session:
        assert cache.get(session, now) is first  # within the bound: not seen yet
        clock.now = 1.01
        later = cache.get(session, now)
    assert later.tenants["physics"].disabled_at is not None


def test_heartbeats_keep_the_basis_and_other_node_changes_drop_it(
    session_factory: sessionmaker[Session],
) -> None:
    _seed(session_factory)
    cache = SubmitBasisCache(_rules(), ttl_s=60, monotonic=_Clock())
    now = dt.datetime.now(dt.UTC)
    with transaction(session_factory) as session:
        first = cache.get(session, now)
    with transaction(session_factory) as session:
        assert heartbeat(session, "n1", now)
        row = session.scalars(select(TenantRow)).one()
        row.usage_as_of = 12.5  # fair-share bookkeeping: not what a submit reads
    with transaction(session_factory) as session:
        assert cache.get(session, now) is first
        session.execute(update(NodeRow).values(schedulable=False))
    with transaction(session_factory) as session:
        assert cache.get(session, now) is not first
    assert not statement_changes(update(NodeRow).values(heartbeat_at=now))
    assert statement_changes(update(NodeRow).values(heartbeat_at=now, schedulable=True))
    assert statement_changes(update(TenantRow).values(disabled_at=now))
    assert not statement_changes(update(JobRow).values(reason="x"))


def test_a_basis_read_while_a_change_commits_is_not_served_after_it(
    session_factory: sessionmaker[Session],
) -> None:
    _seed(session_factory)
    cache = SubmitBasisCache(_rules(), ttl_s=60, monotonic=_Clock())
    now = dt.datetime.now(dt.UTC)
    with session_factory() as changing, changing.begin():
        changing.scalars(select(TenantRow)).one().disabled_at = now
        changing.flush()  # not committed: a reader still sees the tenant enabled
        with read_transaction(session_factory) as session:
            stale = cache.get(session, now)
        assert stale.tenants["physics"].disabled_at is None
    with read_transaction(session_factory) as session:
        assert cache.get(session, now).tenants["physics"].disabled_at is not None


def test_the_common_submit_records_what_the_orm_path_records(
    platform: Platform, tmp_path: Path
) -> None:
    platform.tenant("physics", cpu=4, memory="4Gi")
    alice = platform.user("alice", "physics")
    blocker = platform.ok("POST", "/api/v1/jobs", alice, json=SMALL)["id"]
    caller = platform.context.tokens.get(hash_token(alice))
    assert caller is not None
    bodies: list[dict[str, Any]] = [
        {**SMALL, "dependency": f"afterok:{blocker}"},
        {
            "command": ["python", "x.py"],
            "name": "n1",
            "env": {"A": "1"},
            "time": "1h",
            "priority": "high",
            "signal": "USR1@30",
            "requeue": False,
            "workdir": str(tmp_path),
            "tasks": 2,
            "resources": {"cpu": 0.5, "memory": "1Gi"},
        },
        {"command": ["true"]},
    ]
    context = platform.context
    for body in bodies:
        request = request_from_api(JobCreate.model_validate(body), context.rules)
        now = context.clock.now()
        with transaction(platform.sessions) as session:
            row = service.submit_job(session, caller, request, context.rules, now)
            one = service.submit_one(
                session, caller, request, context.rules, now, basis=context.submit_basis
            )
            orm_answer = _JOB.dump_json(JobOut(**_job_fields(row, "physics", "alice", None)))
            core_answer = _JOB.dump_json(JobOut(**_job_fields(one, one.tenant, "alice", one.vc)))
            jobs = {
                r.id: dict(r._mapping)
                for r in session.execute(
                    select(JobRow.__table__).where(JobRow.id.in_([row.id, one.id]))
                )
            }
            events = {
                r.job_id: dict(r._mapping)
                for r in session.execute(
                    select(JobEventRow.__table__).where(JobEventRow.job_id.in_([row.id, one.id]))
                )
            }
        assert orm_answer.replace(b'"id":%d,' % row.id, b"") == core_answer.replace(
            b'"id":%d,' % one.id, b""
        )
        skip = {"id", "change_seq", "job_id"}
        assert {k: v for k, v in jobs[row.id].items() if k not in skip} == {
            k: v for k, v in jobs[one.id].items() if k not in skip
        }
        assert {k: v for k, v in events[row.id].items() if k not in skip} == {
            k: v for k, v in events[one.id].items() if k not in skip
        }


def test_a_job_held_by_an_unfinished_job_does_not_wake_the_loops(platform: Platform) -> None:
    platform.tenant("physics", cpu=4, memory="4Gi")
    alice = platform.user("alice", "physics")
    wake = platform.context.wake

    def wakes(body: dict[str, Any]) -> bool:
        wake.clear()
        platform.ok("POST", "/api/v1/jobs", alice, json=body)
        return wake.is_set()

    assert wakes(SMALL)
    blocker = platform.ok("POST", "/api/v1/jobs", alice, json=SMALL)["id"]
    assert not wakes({**SMALL, "dependency": f"afterok:{blocker}"})
    assert not wakes({**SMALL, "dependency": f"afterany:{blocker}"})
    assert wakes({**SMALL, "dependency": f"after:{blocker}"})  # not sure: woken
    assert wakes({**SMALL, "dependency": f"afterok:{blocker}?afterok:1"})
    assert wakes({**SMALL, "dependency": "singleton"})
    platform.ok("POST", f"/api/v1/jobs/{blocker}/cancel")
    platform.wait_for([blocker])
    assert wakes({**SMALL, "dependency": f"afterok:{blocker}"})  # it ended: the pass decides


def test_the_fast_answer_has_the_endpoints_headers(platform: Platform) -> None:
    platform.tenant("physics", cpu=4, memory="4Gi")
    alice = platform.user("alice", "physics")
    platform.context.tokens.forget(hash_token(alice))
    by_endpoint = platform.call("POST", "/api/v1/jobs", alice, json=SMALL)  # not cached yet
    assert platform.context.tokens.get(hash_token(alice)) is not None
    by_fast_path = platform.call("POST", "/api/v1/jobs", alice, json=SMALL)
    for response in (by_endpoint, by_fast_path):
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
    assert list(by_endpoint.headers) == list(by_fast_path.headers)
    first, second = by_endpoint.json(), by_fast_path.json()
    assert list(first) == list(second) and second["id"] == first["id"] + 1


def test_a_refusal_never_rests_on_a_kept_basis(platform: Platform, db_url: str) -> None:
    """Another server enables a tenant, or raises its quota: the next submit here is
    accepted at once, though the kept basis (within its second) says otherwise."""
    platform.tenant("physics", cpu=1, memory="1Gi")
    alice = platform.user("alice", "physics")
    platform.ok("POST", "/api/v1/tenants/physics/disable")
    assert platform.call("POST", "/api/v1/jobs", alice, json=SMALL).status_code == 409
    two_cpus = {**SMALL, "resources": {"cpu": 2, "memory": "16Mi"}}
    other = create_db_engine(db_url)  # another server: no session of this process
    with other.begin() as connection:
        connection.execute(text("UPDATE tenants SET disabled_at = NULL"))
        connection.execute(text("UPDATE tenant_quotas SET nominal_cpu_milli = 4000"))
    other.dispose()
    assert platform.call("POST", "/api/v1/jobs", alice, json=SMALL).status_code == 201
    assert platform.call("POST", "/api/v1/jobs", alice, json=two_cpus).status_code == 201
