"""``GET /metrics``: computed from the database at scrape time, so every replica tells the
truth; API latency and errors measured per process."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from support.platform import Platform
from virtuai.drivers.local.inventory import GpuStats
from virtuai.services.metrics import Metrics


def scrape(platform: Platform, token: str | None = None) -> dict[str, list[Any]]:
    response = platform.call("GET", "/metrics", token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_metrics_tell_what_the_database_holds(platform: Platform) -> None:
    platform.tenant("physics")
    platform.tenant("biology")
    alice = platform.user("alice", "physics")
    bob = platform.user("bob", "biology")
    done = platform.submit(alice, ["true"], resources={"cpu": 1, "memory": "64Mi"})
    platform.wait_for([done["id"]])
    running = platform.submit(bob, ["sleep", "30"], resources={"cpu": 2, "memory": "1Gi"})
    platform.wait_for([running["id"]], {"running"})
    platform.submit(bob, ["true"], dependency=f"afterok:{running['id']}")
    platform.call("GET", "/api/v1/jobs/999")  # a 404, counted as an error of its route

    samples = scrape(platform)
    assert value(samples, "virtuai_jobs", tenant="physics", state="succeeded") == 1
    assert value(samples, "virtuai_jobs", tenant="biology", state="running") == 1
    assert value(samples, "virtuai_jobs", tenant="biology", state="pending") == 1
    assert value(samples, "virtuai_scheduler_pending_jobs") == 1
    assert value(samples, "virtuai_admissions_total", tenant="physics") == 1
    assert value(samples, "virtuai_admissions_total", tenant="biology") == 1
    wait = "virtuai_job_queue_wait_seconds_count"
    assert value(samples, wait, tenant="biology", **{"class": "normal"}) == 1
    run = "virtuai_job_run_seconds_count"
    assert value(samples, run, tenant="physics", **{"class": "normal"}) == 1
    assert value(samples, "virtuai_node_cpu_capacity", node="node-1") == 4
    assert value(samples, "virtuai_node_cpu_allocated", node="node-1") == 2
    assert value(samples, "virtuai_node_memory_allocated_bytes", node="node-1") == 2**30
    assert value(samples, "virtuai_node_gpu_capacity", node="node-1") == 2
    assert value(samples, "virtuai_usage_wall_seconds_total", tenant="physics") > 0
    assert value(samples, "virtuai_usage_cpu_seconds_total", tenant="physics") > 0
    latency = "virtuai_api_request_seconds_count"
    assert value(samples, latency, method="POST", route="/api/v1/jobs") == 3
    errors = "virtuai_api_errors_total"
    assert value(samples, errors, route="/api/v1/jobs/{job_id}", status="404") == 1
    # Unmatched paths share one series: clients cannot make up new ones.
    platform.call("GET", "/api/v1/no-such-thing-1")
    platform.call("GET", "/api/v1/no-such-thing-2")
    assert value(scrape(platform), errors, route="unmatched", status="404") == 2

    # Computed at scrape time: another replica (a fresh registry) sees the same numbers.
    other = Metrics(platform.sessions, gpu_stats=list)
    text = generate_latest(other.registry).decode()
    assert 'virtuai_jobs{state="running",tenant="biology"} 1.0' in text


def test_only_admins_and_metrics_readers_scrape(platform: Platform) -> None:
    platform.tenant("physics")
    owner = platform.user("olga", "physics", role="owner")
    prometheus = platform.ok("POST", "/api/v1/users", json={"name": "prometheus"})["token"]
    assert platform.call("GET", "/metrics", owner).status_code == 403
    assert platform.call("GET", "/metrics", prometheus).status_code == 403
    assert platform.http.get("/metrics").status_code == 401
    platform.context.metrics_readers = frozenset({"prometheus"})
    assert "virtuai_jobs" in platform.call("GET", "/metrics", prometheus).text
    # The scrape account sees nothing else.
    assert platform.ok("GET", "/api/v1/jobs", prometheus) == []
    assert (
        platform.call("POST", "/api/v1/jobs", prometheus, json={"command": ["true"]}).status_code
        == 422
    )


def test_gpu_metrics_come_from_nvml(platform: Platform) -> None:
    """NVML cannot run here: a declared fake stands for it (the one fake: GPUs)."""
    stats = [GpuStats(0, "GPU-abc", "A100", 87.0, 10 * 2**30, 80 * 2**30)]
    metrics = Metrics(platform.sessions, gpu_stats=lambda: stats)
    text = generate_latest(metrics.registry).decode()
    assert 'virtuai_gpu_utilization_percent{gpu="0",model="A100",uuid="GPU-abc"} 87.0' in text
    assert "virtuai_gpu_memory_used_bytes" in text and "virtuai_gpu_memory_total_bytes" in text
    assert "virtuai_gpu_" not in generate_latest(Metrics(platform.sessions, list).registry).decode()


def test_the_grafana_dashboard_uses_only_metrics_the_server_exports(platform: Platform) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = Path(__file__).parents[3] / "deploy" / "grafana" / "virtuai.json"
    text = json.dumps(json.loads(dashboard.read_text()))
    used = set(re.findall(r"virtuai_[a-z_]+", text))
    stats = [GpuStats(0, "GPU-abc", "A100", 1.0, 1, 2)]
    metrics = Metrics(platform.sessions, gpu_stats=lambda: stats)
    metrics.observe_request("GET", "/x", 500, 0.1)
    metrics.scheduler_pass.observe(0.01)
    # Every series a family can have, whether or not this empty database fills it yet.
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    exported = {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in ["", *suffixes.get(family.type, [])]
    }
    assert used, "no metric in the dashboard"
    assert used <= exported, used - exported
