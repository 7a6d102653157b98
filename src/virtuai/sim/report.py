"""Run a trace under several policies and write the results: one JSON, PNGs, per-job CSVs.

``run_policies`` replays the trace once per policy (plus the isolated replays
for rho), ``report_json`` builds the one JSON document, and ``write_report``
writes into the output directory::

    results.json             trace, cluster and, per policy, its knobs and metrics
    <policy>-queue.png       waiting jobs per tenant over time
    <policy>-utilization.png GPU and CPU utilization per pool over time
    <policy>-share.png       each tenant's dominant share over time
    <policy>-jobs.csv        one row per job: start, finish, JCT, wait, rho ...

The JSON holds no wall-clock time, so the same input gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtuai.errors import InvalidRequest, Unschedulable
from virtuai.sim.cluster import ClusterSpec
from virtuai.sim.engine import SimRun, SimStalled, simulate
from virtuai.sim.isolated import IsolatedReplays, Isolation
from virtuai.sim.metrics import RHO_FLOOR_S, summarize
from virtuai.sim.plots import plot_run
from virtuai.sim.policy import PolicySpec
from virtuai.sim.trace import TraceJob

__all__ = [
    "FORMAT",
    "RESULTS_FILE",
    "PolicyReport",
    "file_stem",
    "report_json",
    "run_policies",
    "trace_info",
    "write_report",
]

FORMAT = 1
RESULTS_FILE = "results.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class PolicyReport:
    policy: PolicySpec
    run: SimRun
    summary: dict[str, Any]
    isolated: list[float]
    isolated_fallbacks: int
    wall_s: float = 0.0  # measured, for the console only: never in the JSON
    isolated_wall_s: float = 0.0


def file_stem(name: str) -> str:
    """A policy name made safe for a file name."""
    return _UNSAFE.sub("-", name).strip("-.") or "policy"


def trace_info(jobs: Sequence[TraceJob], path: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": path.name if path else "<generated>"}
    if path is not None:
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    info["jobs"] = len(jobs)
    info["tenants"] = sorted({j.tenant for j in jobs})
    info["span_s"] = (jobs[-1].submit - jobs[0].submit) if jobs else 0.0
    return info


def run_policies(
    jobs: Sequence[TraceJob],
    cluster: ClusterSpec,
    policies: Sequence[PolicySpec],
    *,
    isolation: Isolation | None = Isolation.SIMULATE,
    tick_s: float = 0.0,
    progress: Callable[[str], None] | None = None,
    on_jobs: Callable[[str, int, int, float], None] | None = None,
    isolated: IsolatedReplays | None = None,
) -> list[PolicyReport]:
    """Replay ``jobs`` under each policy; ``isolation=None`` skips rho (and its replays).

    ``on_jobs(policy, done, total, simulated_time)`` is called every 1,000 jobs
    finished (for a progress bar); without it ``progress`` gets a note per tenth.
    ``isolated``: the isolated replays for rho, if the caller started them already (a
    caller that starts a thread must start them first: ``IsolatedReplays``); they are
    closed on return."""
    try:
        stems = [file_stem(p.name) for p in policies]
        for k, stem in enumerate(stems):
            if stem in stems[:k]:
                raise InvalidRequest(
                    f"two policies are named {policies[k].name!r}; give each a distinct name",
                    field="name",
                )
        reports = []
        # One reference policy: the same T_id for every policy, from replays that depend
        # on the trace alone (under way in worker processes beside these, on a long trace).
        if isolated is None and isolation is not None:
            isolated = IsolatedReplays.start(jobs, cluster, isolation, tick_s=tick_s)
        common: tuple[list[float], int] | None = None
        for policy in policies:
            note = _noter(progress, policy.name)
            note(f"replaying {len(jobs):,} jobs")
            began = time.perf_counter()
            seen = _every_tenth(note) if on_jobs is None else _forward(on_jobs, policy.name)
            try:
                run = simulate(jobs, cluster, policy, tick_s=tick_s, progress=seen)
                wall = time.perf_counter() - began
                iso: list[float] = [math.nan] * len(run.jobs)
                fallbacks = 0
                began = time.perf_counter()
                if isolated is not None and common is None:
                    note(f"isolated replays ({isolation}, reference policy) for rho")
                    common = isolated.result(note)
                if common is not None:
                    iso, fallbacks = common
                iso_wall = time.perf_counter() - began  # (what they added to the replay's)
            except SimStalled as exc:
                raise Unschedulable(
                    f"the replay under policy {policy.name} stopped: {exc}"
                ) from exc
            summary = summarize(run, iso if isolation is not None else None)
            summary["metrics"]["isolated_fallbacks"] = fallbacks
            reports.append(PolicyReport(policy, run, summary, iso, fallbacks, wall, iso_wall))
    finally:
        if isolated is not None:
            isolated.close()  # (a replay that failed leaves no worker behind)
    return reports


def _forward(
    on_jobs: Callable[[str, int, int, float], None], name: str
) -> Callable[[int, int, float], None]:
    def progress(done: int, total: int, now: float) -> None:
        on_jobs(name, done, total, now)

    return progress


def _noter(progress: Callable[[str], None] | None, name: str) -> Callable[[str], None]:
    def note(message: str) -> None:
        if progress is not None:
            progress(f"{name}: {message}")

    return note


def _every_tenth(note: Callable[[str], None]) -> Callable[[int, int, float], None]:
    """A ``simulate`` progress callback that notes each tenth of the jobs done."""
    last = [0]

    def progress(done: int, total: int, now: float) -> None:
        tenth = 10 * done // max(1, total)
        if tenth > last[0]:
            last[0] = tenth
            note(f"{done:,} of {total:,} jobs done")

    return progress


def report_json(
    trace: dict[str, Any],
    cluster: ClusterSpec,
    reports: Sequence[PolicyReport],
    isolation: Isolation | None,
    tick_s: float = 0.0,
) -> dict[str, Any]:
    doc = {
        "format": FORMAT,
        "trace": trace,
        "cluster": cluster.summary(),
        "isolation": None if isolation is None else str(isolation),
        "tick_s": tick_s,
        "policies": [
            {
                "name": r.policy.name,
                "description": r.policy.description,
                "knobs": r.policy.knobs(),
                **r.summary,
            }
            for r in reports
        ],
    }
    cleaned: dict[str, Any] = _clean(doc)
    return cleaned


def _clean(value: Any) -> Any:
    """Floats rounded to 6 decimals, NaN and infinities as null: stable, valid JSON."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(
    out: Path, doc: dict[str, Any], reports: Sequence[PolicyReport], *, plots: bool = True
) -> list[Path]:
    """Write ``results.json``, and per policy the plots and the per-job CSV, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / RESULTS_FILE]
    paths[0].write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    for report in reports:
        stem = file_stem(report.policy.name)
        if plots:
            paths.extend(plot_run(report.run, out, stem))
        paths.append(_write_jobs(report, out / f"{stem}-jobs.csv"))
    return paths


def _fmt(value: float) -> str:
    if math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _write_jobs(report: PolicyReport, path: Path) -> Path:
    run = report.run
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            ["id", "tenant", "submit_time", "first_start", "finish", "outcome", "jct", "wait",
             "run", "preemptions", "isolated_jct", "rho"]
        )  # fmt: skip
        for j, job in enumerate(run.jobs):
            finish = run.finish[j]
            jct = finish - job.submit
            iso = report.isolated[j]
            rho = (
                max(jct, RHO_FLOOR_S) / max(iso, RHO_FLOOR_S)
                if not math.isnan(iso + jct)
                else math.nan
            )
            writer.writerow(
                [
                    job.id, job.tenant, _fmt(job.submit), _fmt(run.first_start[j]), _fmt(finish),
                    run.outcome[j], _fmt(jct), _fmt(jct - run.ran[j]), _fmt(job.run_s),
                    run.preemptions[j], _fmt(iso), _fmt(rho),
                ]
            )  # fmt: skip
    return path
