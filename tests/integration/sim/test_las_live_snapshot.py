"""LAS in the live server: the snapshot carries attained service and every preemptor
(``preempted_by``) from the database (real SQLite and PostgreSQL), so ``Policy.las()``
can run there."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker

from support import rows
from virtuai.scheduler.snapshot import Policy
from virtuai.store.models import UsageRow
from virtuai.store.snapshot import build_snapshot

NOW = rows.T0 + dt.timedelta(hours=5)


def test_the_snapshot_carries_attained_gpu_service_and_every_preemptor(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session, session.begin():
        team, ada = rows.tenant("vision"), rows.user("ada")
        session.add_all([team, ada])
        session.flush()
        requeued = rows.job(ada, team, gpu=2, attempt=1, preempted_for=99, preempted_by=[7, 99])
        fresh = rows.job(ada, team, gpu=1)
        done = rows.job(ada, team, gpu=4, state="succeeded")
        session.add_all([requeued, fresh, done])
        session.flush()
        for job, wall in ((requeued, 1800.0), (requeued, 600.0), (done, 100.0)):
            session.add(
                UsageRow(
                    job_id=job.id,
                    attempt=0 if wall != 600.0 else 1,
                    task_index=0,
                    tenant_id=team.id,
                    user_id=ada.id,
                    node="n1",
                    started_at=rows.T0,
                    finished_at=rows.T0,
                    wall_s=wall,
                    cpu_s=0.0,
                    gpu_s=0.0,
                    memory_gb_s=0.0,
                )
            )
        ids = (requeued.id, fresh.id)
    with session_factory() as session:
        pending = [session.get_one(type(requeued), i) for i in ids]
        las = build_snapshot(session, now=NOW, policy=Policy.las(), preemptible={}, pending=pending)
        plain = build_snapshot(session, now=NOW, policy=Policy(), preemptible={}, pending=pending)
    by_id = {j.id: j for j in las.pending}
    assert by_id[str(ids[0])].attained_gpu_s == 2 * (1800.0 + 600.0)  # 2 GPUs
    assert by_id[str(ids[0])].preempted_by == {"7", "99"}
    assert by_id[str(ids[1])].attained_gpu_s == 0.0
    assert by_id[str(ids[1])].preempted_by == frozenset()
    # Without LAS the usage records are not read at all.
    assert all(j.attained_gpu_s == 0.0 for j in plain.pending)
