"""Jobs on a real Slurm site: one sbatch per attempt, state from batched squeue/sacct."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from sqlalchemy import select

from conftest import SlurmDev
from support.platform import Platform
from virtuai.drivers.slurm.driver import SlurmSiteDriver
from virtuai.store.models import JobRow, TaskRow

pytestmark = pytest.mark.root


def slurm_jobs_of(p: Platform, slurm: SlurmDev, job_id: int, attempt: int = 0) -> list[str]:
    """``id|account`` of the Slurm jobs of one attempt of this platform's job (by the
    comment with the site's token: other tests' platforms reuse job ids)."""
    driver = p.sites.driver("vsd")
    assert driver is not None
    key = f"{job_id}.{attempt}"
    want = f"virtuai:{driver.config.token}:{key}"
    for _ in range(50):  # slurmdbd records a job a moment after slurmctld ends it
        out = slurm.ssh(f"sacct -n -X -P --name=vai-{key} -S now-1days -o JobIDRaw,Account,Comment")
        found = [line.rsplit("|", 1)[0] for line in out.splitlines() if line.endswith(f"|{want}")]
        if found:
            return found
        time.sleep(0.2)
    return []


def test_a_gang_runs_across_two_slurm_nodes_with_virtuai_environment(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    # 3 CPUs per task on 4-CPU nodes: the two tasks cannot share a node.
    job = p.submit(
        p.admin_token,
        [
            "bash",
            "-c",
            "echo rank=$RANK of $WORLD_SIZE local=$LOCAL_RANK on $(hostname) "
            "master=$MASTER_ADDR:$MASTER_PORT job=$VIRTUAI_JOB_ID",
        ],
        tenant="physics",
        site="vsd",
        tasks=2,
        resources={"cpu": 3, "memory": "256Mi", "gpu": 1},
        time="5m",
    )
    assert job["site"] == "vsd" and job["pool"] == "vsd:debug"
    done = p.wait_for([job["id"]], timeout=60)[job["id"]]
    assert done["state"] == "succeeded", done
    logs = [p.logs(job["id"], task=i) for i in (0, 1)]
    assert f"job={job['id']}" in logs[0] and "rank=0 of 2 local=0" in logs[0]
    assert "rank=1 of 2 local=0" in logs[1]
    hosts = {re.search(r"on (\S+)", text).group(1) for text in logs}  # type: ignore[union-attr]
    assert hosts == {"vsd-n1", "vsd-n2"}
    assert "master=vsd-n1:29500" in logs[0] and "master=vsd-n1:29500" in logs[1]
    # One Slurm job for the attempt, charged to the tenant's account on the site.
    (only,) = slurm_jobs_of(p, slurm, job["id"])
    assert only.endswith("|physics")
    # Usage once per task of the attempt, from Slurm's own start and end.
    usage = p.ok("GET", "/api/v1/usage", params={"tenant": "physics"})
    row = next(r for r in usage["rows"] if r["tenant"] == "physics")
    assert row["jobs"] == 1 and row["tasks"] == 2
    by_site = p.ok("GET", "/api/v1/usage", params={"tenant": "physics", "by": "site"})["by_site"]
    assert [(r["site"], r["tasks"]) for r in by_site] == [("vsd", 2)]
    assert p.job(job["id"])["reason"] == "exited with code 0"


def test_pending_in_slurm_shows_slurms_reason_and_cancel_is_scancel(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    # Another user of the cluster holds every CPU: our job waits in Slurm's queue.
    blocker = slurm.ssh("sbatch --parsable -N2 --exclusive -t 2 --wrap 'sleep 60'").strip()
    try:
        job = p.submit(p.admin_token, ["sleep", "30"], tenant="physics", site="vsd", time="5m")
        running = p.wait_for([job["id"]], states={"running"}, timeout=30)[job["id"]]
        for _ in range(40):
            p.tick()
            reason = p.job(job["id"])["reason"]
            if "PENDING" in reason:
                break
        assert re.search(r"slurm job \d+ at site vsd: PENDING \((Resources|Priority)\)", reason)
        p.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
        done = p.wait_for([job["id"]], timeout=30)[job["id"]]
        assert done["state"] == "cancelled", (running, done)
        with p.sessions() as session:
            handle = session.scalars(
                select(TaskRow.handle).where(TaskRow.job_id == job["id"])
            ).one()
        assert handle is not None
        assert "CANCELLED" in slurm.ssh(f"sacct -n -X -o State -j {handle['slurm_id']}")
    finally:
        slurm.ssh(f"scancel {blocker}")


def test_array_elements_are_slurm_jobs_each_and_any_replica_reads_their_logs(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    job = p.submit(
        p.admin_token,
        ["bash", "-c", "echo element $SLURM_ARRAY_TASK_ID of $VIRTUAI_ARRAY_ID"],
        tenant="physics",
        site="vsd",
        array="0-2",
        time="2m",
    )
    ids = [j["id"] for j in p.ok("GET", "/api/v1/jobs") if j.get("array_id") == job["id"]]
    assert len(ids) == 3
    done = p.wait_for(ids, timeout=60)
    assert all(j["state"] == "succeeded" for j in done.values()), done
    # Each element is one Slurm job of its own, named and marked with its own attempt key.
    per_element = {i: slurm_jobs_of(p, slurm, i) for i in ids}
    assert all(len(found) == 1 for found in per_element.values()), per_element
    assert len({found[0] for found in per_element.values()}) == 3
    # An instance that does not lead (it drives no site) reads them through a reader of its
    # own, over its own SSH connection.
    replica = Platform(p.sessions, p.state_dir, driver_settings=p.driver_settings)
    try:
        assert "site:vsd" not in replica.drivers
        outputs = sorted(replica.logs(i).strip() for i in ids)
        assert outputs == [f"element {n} of {job['id']}" for n in range(3)]
    finally:
        replica.readers.close()


def test_a_refused_sbatch_fails_the_job_with_slurms_message(
    site_platform: Platform,
) -> None:
    p = site_platform
    p.tenant("chemistry")  # mapped below to an account the cluster does not know
    driver = p.sites.driver("vsd")
    assert driver is not None
    driver.config = dataclasses.replace(driver.config, account_map={"chemistry": "nosuch"})
    job = p.submit(p.admin_token, ["true"], tenant="chemistry", site="vsd", time="1m")
    done = p.wait_for([job["id"]], timeout=30)[job["id"]]
    assert done["state"] == "failed"
    tasks = p.ok("GET", f"/api/v1/jobs/{job['id']}")
    assert "could not start" in tasks["reason"]
    with p.sessions() as session:
        message = session.scalar(select(TaskRow.message).where(TaskRow.job_id == job["id"]))
    assert message is not None and "sbatch refused the job" in message
    assert "account" in message.lower()


def test_a_crash_between_sbatch_and_record_never_submits_twice(
    site_platform: Platform, slurm: SlurmDev
) -> None:
    p = site_platform
    job = p.submit(p.admin_token, ["sleep", "2"], tenant="physics", site="vsd", time="1m")
    p.sites.tick()
    p.lifecycle.tick()
    p.scheduling.tick()
    p.lifecycle.start_admitted()  # admitted -> starting: tasks exist, nothing launched
    # The crashed server had submitted the attempt but recorded nothing.
    driver = p.sites.driver("vsd")
    assert isinstance(driver, SlurmSiteDriver)
    with p.sessions() as session:
        row = session.get(JobRow, job["id"])
        task = session.scalars(select(TaskRow).where(TaskRow.job_id == job["id"])).one()
        assert row is not None and task.handle is None
        spec = p.lifecycle._launch_of(session, row, "physics", task).spec
    first_id = driver.launch(spec)["slurm_id"]
    p.sites.close()  # kill -9: the process and its memory are gone

    restarted = p.restarted()
    try:
        done = restarted.wait_for([job["id"]], timeout=60)[job["id"]]
        assert done["state"] == "succeeded"
        with restarted.sessions() as session:
            handle = session.scalars(
                select(TaskRow.handle).where(TaskRow.job_id == job["id"])
            ).one()
        assert handle is not None and handle["slurm_id"] == first_id
        assert len(slurm_jobs_of(restarted, slurm, job["id"])) == 1
    finally:
        restarted.sites.close()


def test_a_local_job_and_a_slurm_job_share_one_quota(site_platform: Platform) -> None:
    p = site_platform
    p.ok("PUT", "/api/v1/tenants/physics/quota", json={"pool": "*", "cpu": 2})
    local = p.submit(
        p.admin_token, ["sleep", "30"], tenant="physics", resources={"cpu": 1.5, "memory": "64Mi"}
    )
    p.wait_for([local["id"]], states={"running"})
    remote = p.submit(
        p.admin_token,
        ["true"],
        tenant="physics",
        site="vsd",
        resources={"cpu": 1, "memory": "64Mi"},
        time="1m",
    )
    for _ in range(3):
        p.tick()
    waiting = p.job(remote["id"])
    assert waiting["state"] == "pending" and "quota" in waiting["reason"], waiting
    p.ok("POST", f"/api/v1/jobs/{local['id']}/cancel")
    done = p.wait_for([remote["id"]], timeout=60)[remote["id"]]
    assert done["state"] == "succeeded"


def test_the_site_shows_its_health_capacity_and_partitions_and_its_key_stays_private(
    site_platform: Platform,
) -> None:
    p = site_platform
    site = p.ok("GET", "/api/v1/sites/vsd")
    assert site["health"] == "ok" and site["pool"] == "vsd:debug"
    assert site["capacity"] == {
        "nodes": 2,
        "nodes_up": 2,
        "cpus": 8,
        "memory_mb": 6000,
        "gpus": 4,
    }
    assert {x["name"] for x in site["partitions"]} == {"debug", "urgent"}
    assert site["last_seen_at"] is not None
    assert "PRIVATE" not in str(p.ok("GET", "/api/v1/sites"))
    key = p.state_dir / "sites" / "vsd.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    nodes = {n["name"]: n for n in p.ok("GET", "/api/v1/nodes")}
    assert nodes["vsd:vsd-n1"]["pool"] == "vsd:debug" and nodes["vsd:vsd-n1"]["site"] == "vsd"


def test_max_jobs_defers_launches_until_a_slurm_job_ends(site_platform: Platform) -> None:
    p = site_platform
    driver = p.sites.driver("vsd")
    assert driver is not None
    driver.config = dataclasses.replace(driver.config, max_jobs=1)
    ids = [
        p.submit(p.admin_token, ["sleep", "2"], tenant="physics", site="vsd", time="1m")["id"]
        for _ in range(2)
    ]
    most = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        p.tick()
        # What Slurm itself holds of ours, queued or running, as the last squeue saw it.
        active = [e for e in driver.seen.queue.values() if e.state in {"PENDING", "RUNNING"}]
        most = max(most, len(active))
        if all(p.job(i)["state"] == "succeeded" for i in ids):
            break
        time.sleep(0.1)
    jobs = [p.job(i) for i in ids]
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"]
    assert most == 1
    # The second was submitted only once the first had ended (sacct's times, in seconds).
    first, second = sorted((j["task_runs"][0] for j in jobs), key=lambda r: r["started_at"])
    assert second["started_at"] >= first["finished_at"]
