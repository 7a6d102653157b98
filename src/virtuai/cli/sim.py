"""``virtuai sim``: replay a workload trace through the real scheduler, offline.

Unlike the other commands this one does not talk to a server: it runs the
scheduler's own code (``virtuai.sim``) on a virtual clock.  ``virtuai.sim`` is
imported only when a simulation runs, so that numpy and matplotlib do not slow
down the start of every other command.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject
from virtuai.domain.units import parse_cpu, parse_duration, parse_memory
from virtuai.errors import InvalidRequest

if TYPE_CHECKING:
    from virtuai.sim.policy import PolicySpec
    from virtuai.sim.report import PolicyReport
    from virtuai.sim.trace import TraceJob

EXAMPLE_TRACE = "trace-2k.csv"
EXAMPLE_CLUSTER = "cluster-20.yaml"
ISOLATION_CHOICES = ("simulate", "scale", "none")
TRACE_FORMATS = ("virtuai", "philly", "pai")


def register(app: typer.Typer, panel: str) -> None:
    sim_app = typer.Typer(
        name="sim",
        help="Replay a workload trace through the scheduler on a virtual clock.",
        add_completion=False,
    )
    sim_app.callback(invoke_without_command=True)(sim)
    sim_app.command("generate")(generate)
    sim_app.command("export")(export)
    app.add_typer(sim_app, name="sim", rich_help_panel=panel)


def sim(
    ctx: typer.Context,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Trace CSV: one job per row.", dir_okay=False)
    ] = None,
    cluster: Annotated[
        Path | None, typer.Option("--cluster", help="Cluster YAML: pools, tenants.", dir_okay=False)
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Policy YAML (repeat to compare), or a built-in policy's name "
            "(--list-policies).  Default: fifo.",
        ),
    ] = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            help="Use the shipped 2,000-job trace and 20-node cluster (and, without --policy, "
            "the fifo, fairshare and fairshare-backfill examples).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write results.json, PNG plots and per-job CSVs here."),
    ] = None,
    isolated: Annotated[
        str,
        typer.Option(
            "--isolated",
            help="How to estimate each job's JCT on its tenant's share alone, for rho: "
            "simulate (replay each tenant on its slice), scale (no replay) or none.",
        ),
    ] = "simulate",
    tick: Annotated[
        float,
        typer.Option(
            "--tick",
            min=0.0,
            max=86_400.0,
            help="Schedule only at multiples of this many seconds (0: at every event; at "
            "most a day). Fewer passes, faster runs; ends and submissions wait for the "
            "next tick.",
        ),
    ] = 0.0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNGs.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON, not the table.")] = False,
    trace_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Trace layout: virtuai (ours), philly (Philly's cluster_job_log as "
            "published, or flattened to CSV) or pai (Alibaba PAI's pai_task_table.csv, "
            "joined with pai_job_table.csv beside it, or its simulator's job list); see "
            "virtuai.sim.formats.",
        ),
    ] = "virtuai",
    cpu_per_gpu: Annotated[
        str,
        typer.Option(
            "--cpu-per-gpu",
            help="CPUs given with each GPU of a philly or pai job list (4, 500m): "
            "those traces do not record them.",
        ),
    ] = "4",
    memory_per_gpu: Annotated[
        str,
        typer.Option(
            "--memory-per-gpu",
            help="Memory given with each GPU of a philly or pai job list (32Gi).",
        ),
    ] = "32Gi",
    checkpoint_interval: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-interval",
            help="How often the trace's jobs checkpoint (600, 10m; 0: never), for those "
            "whose row does not say: the policy's checkpoint_interval otherwise.",
        ),
    ] = None,
    restart_overhead: Annotated[
        str | None,
        typer.Option(
            "--restart-overhead",
            help="What each restart of the trace's jobs spends before progress (60, 1m), "
            "for those whose row does not say: the policy's restart_overhead otherwise.",
        ),
    ] = None,
    list_policies: Annotated[
        bool,
        typer.Option(
            "--list-policies", help="Print the built-in policies, one per line, name first."
        ),
    ] = False,
) -> None:
    """Replay TRACE on CLUSTER under each POLICY and compare completion times, waits,
    utilization and fairness side by side."""
    if ctx.invoked_subcommand is not None:
        return
    if list_policies:
        from virtuai.sim import policy as sim_policy

        for name, description in sim_policy.describe_examples():
            typer.echo(f"{name}\t{description}")
        return
    if trace_format not in TRACE_FORMATS:
        raise typer.BadParameter(
            f"{trace_format!r} is not one of {', '.join(TRACE_FORMATS)}", param_hint="--format"
        )
    if isolated not in ISOLATION_CHOICES:
        raise typer.BadParameter(
            f"{isolated!r} is not one of {', '.join(ISOLATION_CHOICES)}", param_hint="--isolated"
        )
    if not example and (trace is None or cluster is None):
        missing = "--trace" if trace is None else "--cluster"
        raise typer.BadParameter("is required (or use --example)", param_hint=missing)
    if out is not None:
        _out_dir(out)
    from virtuai.sim import cluster as sim_cluster
    from virtuai.sim import formats as sim_formats
    from virtuai.sim import isolated as sim_isolated
    from virtuai.sim import report as sim_report
    from virtuai.sim import trace as sim_trace

    data = files("virtuai.sim") / "data"
    with (
        as_file(data / EXAMPLE_CLUSTER) as example_cluster,
        as_file(data / EXAMPLE_TRACE) as example_trace,
    ):
        cluster_path = cluster or example_cluster
        trace_path = trace or example_trace
        spec = sim_cluster.load_cluster(cluster_path)
        left_out: Counter[str] = Counter()
        jobs = sim_formats.read_any(
            trace_path,
            sim_formats.TraceFormat(trace_format),
            spec.priority_classes,
            cpu_per_gpu=_per_gpu(cpu_per_gpu, "--cpu-per-gpu", parse_cpu),
            memory_per_gpu=_per_gpu(memory_per_gpu, "--memory-per-gpu", parse_memory),
            left_out=left_out,
        )
        for why, count in sorted(left_out.items()):
            _note(f"{trace_path.name}: left out {count:,} {why}")
        if not jobs:
            raise InvalidRequest(f"{trace_path.name}: no job to replay")
        sim_trace.check_tenants(jobs, [t.name for t in spec.tenants], trace_path.name)
        sim_trace.check_pools(jobs, [p.name for p in spec.pools], trace_path.name)
        jobs = _with_costs(jobs, checkpoint_interval, restart_overhead)
        info = sim_report.trace_info(jobs, trace_path)
    names = policy or (["fifo", "fairshare", "fairshare-backfill"] if example else ["fifo"])
    policies = [_policy(name) for name in names]
    isolation = None if isolated == "none" else sim_isolated.Isolation(isolated)
    # (Before the progress bar's thread: their workers are forked.)
    replays = (
        None
        if isolation is None
        else sim_isolated.IsolatedReplays.start(jobs, spec, isolation, tick_s=tick)
    )
    with _Bar(len(jobs)) as bar:
        reports = sim_report.run_policies(
            jobs,
            spec,
            policies,
            isolation=isolation,
            tick_s=tick,
            progress=_note,
            on_jobs=bar.update if bar.shown else None,
            isolated=replays,
        )
    doc = sim_report.report_json(info, spec, reports, isolation, tick)
    for report in reports:
        _note(_speed(report))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        _print_table(doc)
    if out is not None:  # after the results are shown: a full disk must not hide them
        with _writing(out):
            written = sim_report.write_report(out, doc, reports, plots=plots)
        pngs = sum(1 for p in written if p.suffix == ".png")
        _note(
            f"wrote {sim_report.RESULTS_FILE}, {pngs} plots and {len(reports)} job lists to {out}"
        )


def _note(message: str) -> None:
    output.echo_err(message)


def _out_dir(out: Path) -> None:
    """``--out``, made before the work: an hour's replay must not end in "File exists"."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise typer.BadParameter(f"{out} is a file, not a directory", param_hint="--out") from None
    except OSError as exc:
        raise typer.BadParameter(f"cannot make {out}: {exc.strerror}", param_hint="--out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"cannot write into {out}", param_hint="--out")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A write into ``out`` that fails (a full disk) is an error naming the file."""
    try:
        yield
    except OSError as exc:  # a failed write names no file, a failed open does
        what = f"{exc.filename}: cannot write it" if exc.filename else f"cannot write into {out}"
        raise InvalidRequest(f"{what}: {exc.strerror or exc}") from None


class _Bar:
    """A progress bar on stderr (jobs done, and the simulated time reached) for replays
    long enough to want one: 10,000 jobs or more, on a terminal."""

    def __init__(self, jobs: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = console or Console(stderr=True)
        self.shown = jobs >= 10_000 and console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("simulated {task.fields[clock]}"),
            console=console,
            transient=True,
            disable=not self.shown,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, policy: str, done: int, total: int, now: float) -> None:
        task = self._tasks.get(policy)
        if task is None:
            task = self._tasks[policy] = self._progress.add_task(policy, total=total, clock="")
        self._progress.update(task, completed=done, clock=output.duration(now))


def _speed(report: PolicyReport) -> str:
    jobs = len(report.run.jobs)
    rate = f" ({jobs / report.wall_s:,.0f} jobs/s)" if report.wall_s > 0 else ""
    extra = f"; isolated replays {report.isolated_wall_s:.1f} s" if report.isolated_wall_s else ""
    return f"{report.policy.name}: {jobs} jobs in {report.wall_s:.1f} s{rate}{extra}"


def _policy(name: str) -> PolicySpec:
    from virtuai.sim import policy as sim_policy

    path = Path(name)
    if path.exists() or name not in sim_policy.EXAMPLE_POLICIES:
        if path.is_dir():
            raise typer.BadParameter(f"{name} is a directory", param_hint="--policy")
        if not path.exists():
            raise typer.BadParameter(
                f"{name} is neither a built-in policy ({', '.join(sim_policy.EXAMPLE_POLICIES)})"
                " nor a policy file",
                param_hint="--policy",
            )
        return sim_policy.load_policy(path)
    return sim_policy.example_policy(name)


# The comparison table ------------------------------------------------------------------


def _pct(value: Any) -> str:
    return output.NONE if value is None else f"{100 * value:.1f}%"


def _num(digits: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return output.NONE if value is None else f"{value:,.{digits}f}"

    return fmt


def _dur(value: Any) -> str:
    return output.duration(value)


def _int(value: Any) -> str:
    return output.NONE if value is None else f"{value:,}"


ROWS: Sequence[tuple[str, str, Callable[[Any], str]]] = (
    ("jobs finished", "finished", _int),
    ("  timed out", "timed_out", _int),
    ("  rejected (never fit)", "rejected", _int),
    ("  unfinished", "unfinished", _int),
    ("JCT mean", "jct_mean_s", _dur),
    ("JCT p50", "jct_p50_s", _dur),
    ("JCT p95", "jct_p95_s", _dur),
    ("JCT p99", "jct_p99_s", _dur),
    ("wait mean", "wait_mean_s", _dur),
    ("wait p50", "wait_p50_s", _dur),
    ("wait p95", "wait_p95_s", _dur),
    ("wait p99", "wait_p99_s", _dur),
    ("bounded slowdown mean", "bounded_slowdown_mean", _num(2)),
    ("makespan", "makespan_s", _dur),
    ("GPU utilization", "gpu_utilization", _pct),
    ("GPU utilization (submission window)", "gpu_utilization_submit", _pct),
    ("idle GPUs while jobs wait (mean)", "idle_gpus_waiting_mean", _num(1)),
    ("CPU utilization", "cpu_utilization", _pct),
    ("Jain (dominant share)", "jain", _num(3)),
    ("Jain (GPU)", "jain_gpu", _num(3)),
    ("Jain (contended)", "jain_contended", _num(3)),
    ("  contended time", "contended_s", _dur),
    ("rho mean", "rho_mean", _num(2)),
    ("rho p99", "rho_p99", _num(2)),
    ("rho max", "rho_max", _num(2)),
    ("preemptions", "preemptions", _int),
    ("lost GPU-hours", "lost_gpu_hours", _num(1)),
)


def _print_table(doc: dict[str, Any]) -> None:
    policies = doc["policies"]
    rows = [[label, *(fmt(p["metrics"].get(key)) for p in policies)] for label, key, fmt in ROWS]
    tenants = sorted({name for p in policies for name in p["tenants"]})
    for name in tenants:
        rows.append(
            [
                f"GPU share {name} (contended)",
                *(_pct(p["tenants"].get(name, {}).get("gpu_share_contended")) for p in policies),
            ]
        )
    rows.append(
        [
            "passes / events",
            *(f"{p['simulation']['passes']:,} / {p['simulation']['events']:,}" for p in policies),
        ]
    )
    trace, cluster = doc["trace"], doc["cluster"]
    typer.echo(
        f"{trace['name']}: {trace['jobs']:,} jobs of {len(trace['tenants'])} tenants on "
        f"{cluster['name']}: {cluster['nodes']:,} nodes, {cluster['gpus']:,} GPUs, "
        f"{cluster['cpu']} CPUs"
    )
    output.print_table(["METRIC", *(p["name"] for p in policies)], rows)


# virtuai sim generate ---------------------------------------------------------------

MAX_GENERATED_JOBS = 2_000_000  # a few GB of memory to replay


def generate(
    out: Annotated[Path, typer.Option("--out", help="Directory for trace.csv and cluster.yaml.")],
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, max=MAX_GENERATED_JOBS, help="Number of jobs.")
    ] = 2000,
    nodes: Annotated[int, typer.Option("--nodes", min=2, help="Nodes (a quarter with GPUs).")] = 20,
    tenants: Annotated[
        int, typer.Option("--tenants", min=1, max=1000, help="Tenants, equal weights.")
    ] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same trace).")] = 1,
    load: Annotated[
        float,
        typer.Option(
            "--load", min=0.01, max=100.0, help="Offered work / capacity on the busiest resource."
        ),
    ] = 0.7,
    burst: Annotated[
        float,
        typer.Option(
            "--burst", min=0.0, max=10_000.0, help="Mean extra jobs per submission burst."
        ),
    ] = 4.0,
) -> None:
    """Write a synthetic cluster.yaml and trace.csv (see virtuai.sim.generate)."""
    from virtuai.sim import cluster as sim_cluster
    from virtuai.sim import generate as sim_generate
    from virtuai.sim import trace as sim_trace

    if nodes > sim_cluster.MAX_NODES:
        raise typer.BadParameter(f"at most {sim_cluster.MAX_NODES:,}", param_hint="--nodes")
    _out_dir(out)
    spec = sim_generate.generate_cluster(nodes, tenants)
    trace = sim_generate.generate_trace(spec, jobs, seed=seed, load=load, burst=burst)
    cluster_path, trace_path = out / "cluster.yaml", out / "trace.csv"
    with _writing(out), trace_path.open("w", newline="", encoding="utf-8") as handle:
        cluster_path.write_text(spec.to_yaml(), encoding="utf-8")
        sim_trace.write_trace(trace, handle, spec.priority_classes)
    span = trace[-1].submit - trace[0].submit if trace else 0.0
    typer.echo(f"{trace_path}: {len(trace):,} jobs over {output.duration(span)}")
    typer.echo(f"{cluster_path}: {spec.node_count:,} nodes, {spec.capacity.gpu:,} GPUs")


# virtuai sim export -----------------------------------------------------------------

JOB_PAGE = 10_000  # the server's largest page


def export(
    out: Annotated[Path, typer.Option("--out", help="Directory for trace.csv and cluster.yaml.")],
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="The jobs submitted in the last 7d (12h, 30m ...) or since an ISO date "
            "or date-time (2026-11-01).",
        ),
    ] = "7d",
) -> None:
    """Write this server's recent batch jobs and its cluster (nodes, tenants, quotas,
    priority classes) as trace.csv and cluster.yaml, to replay them under other policies
    before switching the live scheduler (see virtuai.sim.export)."""
    from virtuai.sim import export as sim_export
    from virtuai.sim import trace as sim_trace

    start = _since(since, dt.datetime.now(dt.UTC))
    _out_dir(out)
    with Client.from_environment() as client:
        jobs = _jobs_since(client, start)
        nodes = client.get_list("/api/v1/nodes")
        tenants = client.get_list("/api/v1/tenants")
        classes = client.get_list("/api/v1/priority-classes")
    found = sim_export.export(jobs, nodes, tenants, classes, since=start)
    spec = found.cluster
    cluster_path, trace_path = out / "cluster.yaml", out / "trace.csv"
    with _writing(out), trace_path.open("w", newline="", encoding="utf-8") as handle:
        cluster_path.write_text(spec.to_yaml(), encoding="utf-8")
        sim_trace.write_trace(found.jobs, handle, spec.priority_classes)
    trace = found.jobs
    span = trace[-1].submit - trace[0].submit if trace else 0.0
    typer.echo(
        f"{trace_path}: {_count(len(trace), 'job')} submitted since {start:%Y-%m-%d %H:%M} UTC, "
        f"over {output.duration(span)}"
    )
    typer.echo(
        f"{cluster_path}: {_count(spec.node_count, 'node')} in "
        f"{_count(len(spec.pools), 'pool')}, {_count(spec.capacity.gpu, 'GPU')}, "
        f"{_count(len(spec.tenants), 'tenant')}"
    )
    for why, count in sorted(found.left_out.items()):
        typer.echo(f"left out: {count:,} {why}")
    typer.echo(
        f"replay: virtuai sim --trace {trace_path} --cluster {cluster_path} "
        "--policy fairshare-backfill-preemption --policy las-fairshare"
    )


def _since(raw: str, now: dt.datetime) -> dt.datetime:
    """``7d`` (before ``now``) or an ISO date or date-time (UTC unless it says)."""
    try:
        return _aware(dt.datetime.fromisoformat(raw))
    except ValueError:
        pass
    try:
        return now - dt.timedelta(seconds=parse_duration(raw, field="since"))
    except InvalidRequest:
        raise typer.BadParameter(
            f"{raw!r} is neither a duration (7d, 12h) nor an ISO date (2026-11-01)",
            param_hint="--since",
        ) from None


def _jobs_since(client: Client, start: dt.datetime) -> list[JsonObject]:
    """The caller's jobs (every tenant's for an administrator), newest first, page by page
    until one was submitted before ``start``."""
    found: list[JsonObject] = []
    before: int | None = None
    while True:
        page = client.get_list("/api/v1/jobs", {"limit": JOB_PAGE, "before_id": before})
        found.extend(page)
        if len(page) < JOB_PAGE or any(
            _aware(dt.datetime.fromisoformat(j["submitted_at"])) < start for j in page
        ):
            return found
        before = min(int(j["id"]) for j in page)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _aware(stamp: dt.datetime) -> dt.datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.UTC)


def _per_gpu(raw: str, option: str, parse: Callable[..., int]) -> int:
    try:
        value = parse(raw, field=option)
    except InvalidRequest as exc:
        message = exc.message.removeprefix(f"{option}: ")
        raise typer.BadParameter(message, param_hint=option) from None
    if value <= 0:
        raise typer.BadParameter(f"must be more than 0, not {raw!r}", param_hint=option)
    return value


def _with_costs(jobs: list[TraceJob], interval: str | None, overhead: str | None) -> list[TraceJob]:
    """The trace's checkpoint/restart cost (``--checkpoint-interval``, ``--restart-overhead``)
    for the jobs whose row gives none."""
    from dataclasses import replace

    costs: dict[str, float] = {}
    for field, option, raw in (
        ("checkpoint_interval", "--checkpoint-interval", interval),
        ("restart_overhead", "--restart-overhead", overhead),
    ):
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            try:
                seconds = parse_duration(raw, field=field)
            except InvalidRequest as exc:
                raise typer.BadParameter(exc.message, param_hint=option) from None
        if not math.isfinite(seconds) or seconds < 0:
            raise typer.BadParameter(f"must be seconds >= 0, not {raw!r}", param_hint=option)
        costs[field] = seconds
    interval_s, overhead_s = costs.get("checkpoint_interval"), costs.get("restart_overhead")
    return [
        replace(
            job,
            checkpoint_interval=interval_s
            if job.checkpoint_interval is None
            else job.checkpoint_interval,
            restart_overhead=overhead_s if job.restart_overhead is None else job.restart_overhead,
        )
        for job in jobs
    ]
