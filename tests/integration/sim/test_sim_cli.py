"""``virtuai sim`` end to end: generate a trace, compare policies, write JSON, PNGs and CSVs."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from virtuai.cli.main import app
from virtuai.sim import report as sim_report
from virtuai.sim.engine import SimStalled

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plain(text: str) -> str:
    """Rich's boxed error, as one line of words."""
    return " ".join(text.replace("│", " ").split())


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["sim", *args])


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", path
    return width, height


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    result = run("generate", "--jobs", "400", "--nodes", "12", "--tenants", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "400 jobs" in result.stdout
    return out


def test_compare_two_policies(generated: Path, tmp_path: Path) -> None:
    policy = tmp_path / "mine.yaml"
    policy.write_text("name: mine\norder: fairshare\nbackfill: easy\n")
    out = tmp_path / "out"
    result = run(
        "--trace", str(generated / "trace.csv"),
        "--cluster", str(generated / "cluster.yaml"),
        "--policy", "fifo",
        "--policy", str(policy),
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trace.csv: 400 jobs of 3 tenants on synthetic-12: 12 nodes")
    assert lines[1].split() == ["METRIC", "fifo", "mine"]
    assert any(line.startswith("JCT p99") for line in lines)
    assert any(line.startswith("GPU share physics (contended)") for line in lines)
    assert "wrote results.json, 6 plots and 2 job lists" in result.stderr
    # rho's isolated replays (once, under the reference policy) say how far they are
    assert result.stderr.count("isolated replay 1 of 3: tenant ") == 1

    doc = json.loads((out / "results.json").read_text())
    assert [p["name"] for p in doc["policies"]] == ["fifo", "mine"]
    assert doc["trace"]["jobs"] == 400 and len(doc["trace"]["sha256"]) == 64
    assert doc["isolation"] == "simulate"
    mine = doc["policies"][1]
    assert mine["knobs"]["order"] == "fairshare" and mine["knobs"]["backfill"] == "easy"
    assert mine["metrics"]["finished"] == 400 and mine["metrics"]["rho_max"] > 0
    sizes = {"queue": (900, 400), "utilization": (900, 450), "share": (900, 450)}
    for name in ("fifo", "mine"):
        for kind, size in sizes.items():
            assert png_size(out / f"{name}-{kind}.png") == size
        with (out / f"{name}-jobs.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 400
        assert {r["outcome"] for r in rows} <= {"succeeded", "timed_out"}


def test_json_and_no_plots(generated: Path, tmp_path: Path) -> None:
    result = run(
        "--trace", str(generated / "trace.csv"),
        "--cluster", str(generated / "cluster.yaml"),
        "--isolated", "scale", "--tick", "60", "--no-plots", "--json", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["isolation"] == "scale" and [p["name"] for p in doc["policies"]] == ["fifo"]
    assert doc["tick_s"] == 60
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "results.json").read_text() == result.stdout


def test_bad_trace_names_the_line_and_the_column(generated: Path, tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(
        "submit_time,duration,tenant,cpu,memory\n0,10,physics,1,1Gi\n5,10,physics,1,lots\n"
    )
    result = run("--trace", str(trace), "--cluster", str(generated / "cluster.yaml"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: bad.csv line 3: memory: cannot read 'lots'")


def test_phillys_published_job_log_replays_as_downloaded(tmp_path: Path) -> None:
    """``cluster_job_log`` straight from msr-fiddle/philly-traces, no conversion."""
    log = [
        {
            "status": status,
            "vc": vc,
            "jobid": f"application_{k}",
            "user": "u",
            "submitted_time": f"2017-10-03 03:{k:02d}:00",
            "attempts": [
                {
                    "start_time": f"2017-10-03 04:{k:02d}:00",
                    "end_time": f"2017-10-03 05:{k:02d}:00",
                    "detail": [{"ip": "m1", "gpus": ["gpu0", "gpu1"]}],
                }
            ],
        }
        for k, (status, vc) in enumerate(
            [("Pass", "ee9e8c"), ("Killed", "b436b2"), ("Failed", "ee9e8c"), ("Running", "x")]
        )
    ]
    trace = tmp_path / "cluster_job_log"
    trace.write_text(json.dumps(log))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("pools:\n  gpu: {count: 1, cpu: 32, memory: 256Gi, gpus: 2}\n")
    result = run(
        "--trace", str(trace), "--format", "philly", "--cluster", str(cluster),
        "--policy", "las-fairshare", "--json", "--no-plots", "--isolated", "none",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["trace"]["tenants"] == ["b436b2", "ee9e8c"]
    metrics = doc["policies"][0]["metrics"]
    assert metrics["jobs"] == 3 and metrics["finished"] == 3
    # one 2-GPU node, three 1-hour 2-GPU jobs a minute apart: they run one after another
    assert metrics["makespan_s"] == pytest.approx(3 * 3600)
    assert "cluster_job_log: left out 1 jobs whose status is not Pass, Failed or Killed" in (
        result.stderr
    )


def test_the_cpus_and_memory_of_a_public_traces_gpus_are_set_on_the_command_line(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "philly.csv"
    trace.write_text(
        "jobid,vc,submitted_time,start_time,end_time,num_gpus\na,vc1,0,10,3610,2\nb,vc1,0,,,1\n"
    )
    cluster = tmp_path / "c.yaml"
    cluster.write_text("pools:\n  gpu: {count: 1, cpu: 32, memory: 256Gi, gpus: 2}\n")
    base = ["--trace", str(trace), "--format", "philly", "--cluster", str(cluster)]
    base += ["--json", "--no-plots", "--isolated", "none"]

    def replayed(*extra: str) -> dict[str, int]:
        result = run(*base, *extra)
        assert result.exit_code == 0, result.output
        assert "philly.csv: left out 1 jobs that never started" in result.stderr
        metrics = json.loads(result.stdout)["policies"][0]["metrics"]
        return {k: metrics[k] for k in ("finished", "rejected")}

    assert replayed() == {"finished": 1, "rejected": 0}  # 2 x (4 CPUs, 32Gi)
    assert replayed("--cpu-per-gpu", "16", "--memory-per-gpu", "128Gi")["finished"] == 1
    assert replayed("--cpu-per-gpu", "17") == {"finished": 0, "rejected": 1}
    assert replayed("--memory-per-gpu", "129Gi") == {"finished": 0, "rejected": 1}
    result = run(*base, "--memory-per-gpu", "lots")
    assert result.exit_code == 2
    assert "Invalid value for --memory-per-gpu: cannot read 'lots' as memory" in " ".join(
        result.stderr.replace("│", " ").split()
    )


def test_a_trace_with_no_job_to_replay_is_an_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("id,submit_time,duration,tenant,cpu,memory\n")
    cluster = tmp_path / "c.yaml"
    cluster.write_text("pools:\n  cpu: {count: 1, cpu: 8, memory: 16Gi}\n")
    result = run("--trace", str(trace), "--cluster", str(cluster), "--no-plots")
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("error: t.csv: no job to replay")


def test_the_checkpoint_cost_of_a_whole_trace_is_set_on_the_command_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text(
        "id,submit_time,duration,tenant,cpu,memory,gpus,priority\n"
        "low,0,1000,physics,1,1Gi,1,low\nhigh,250,50,physics,1,1Gi,1,normal\n"
    )
    cluster = tmp_path / "c.yaml"
    cluster.write_text("pools:\n  gpu: {count: 1, cpu: 8, memory: 16Gi, gpus: 1}\n")
    base = ["--trace", str(trace), "--cluster", str(cluster), "--json", "--no-plots"]
    base += ["--policy", "fairshare-backfill-preemption", "--isolated", "none"]

    def makespan(*extra: str) -> float:
        result = run(*base, *extra)
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.stdout)["policies"][0]["metrics"]
        assert metrics["preemptions"] == 1
        return float(metrics["makespan_s"])

    # "low" is preempted at 600 s (its minimum run), "high" runs 50 s; then "low" starts
    # over (the policy checkpoints never) or goes on from 600 s after a 60 s restart.
    assert makespan() == 600 + 50 + 1000
    assert makespan("--checkpoint-interval", "100", "--restart-overhead", "1m") == 650 + 60 + 400
    result = run(*base, "--restart-overhead", "soon")
    assert result.exit_code == 2 and "--restart-overhead" in result.output


def test_a_job_that_cannot_be_preempted_never_borrows_under_a_preempting_policy(
    tmp_path: Path,
) -> None:
    """In a cohort, a high-priority job (not preemptible) above its tenant's nominal quota
    runs by borrowing where nothing preempts, and is rejected where something may (it
    used to wait for quota until the replay was stopped as stalled, with a traceback)."""
    trace = tmp_path / "t.csv"
    trace.write_text(
        "id,submit_time,duration,tenant,cpu,memory,gpus,tasks,priority\n"
        "big,0,600,a,8,64Gi,8,2,high\nsmall,60,600,a,8,64Gi,8,1,high\n"
        "other,120,600,b,8,64Gi,8,1,normal\n"
    )
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "pools:\n  gpu: {count: 2, cpu: 64, memory: 512Gi, gpus: 8}\n"
        "tenants:\n  a: {cohort: lab, quota: {gpu: 8}}\n  b: {cohort: lab, quota: {gpu: 8}}\n"
    )
    base = ["--trace", str(trace), "--cluster", str(cluster), "--json", "--no-plots"]
    result = run(*base, "--isolated", "none",
                 "--policy", "fairshare-backfill", "--policy", "las-fairshare")  # fmt: skip
    assert result.exit_code == 0, result.output
    borrowing, preempting = json.loads(result.stdout)["policies"]
    assert (borrowing["metrics"]["finished"], borrowing["metrics"]["rejected"]) == (3, 0)
    assert (preempting["metrics"]["finished"], preempting["metrics"]["rejected"]) == (2, 1)
    assert preempting["rejected"] == [
        {
            "id": "big",
            "line": 2,
            "reason": "can never run: needs 16 gpu in total but tenant a has a quota of 8 gpu; "
            "a job that cannot be preempted does not borrow",
        }
    ]


def test_a_replay_that_stops_for_lack_of_progress_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stalled(*args: object, **kwargs: object) -> None:
        raise SimStalled(
            "no progress at simulated time 10 s: ...; preempted over and over: job a (3x)", ["a"]
        )

    monkeypatch.setattr(sim_report, "simulate", stalled)
    result = run("--example", "--policy", "fifo", "--isolated", "none", "--no-plots")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the replay under policy fifo stopped: no progress at simulated time 10 s: ...; "
        "preempted over and over: job a (3x)"
    )


def test_bad_cluster_and_policy(generated: Path, tmp_path: Path) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text("pools:\n  gpu: {count: 2, cpu: 8, memory: 1Gi, gpus: many}\n")
    result = run("--trace", str(generated / "trace.csv"), "--cluster", str(cluster))
    assert result.exit_code == 1
    assert "c.yaml line 2: pools.gpu.gpus:" in result.stderr
    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nbackfil: easy\n")
    result = run("--example", "--policy", str(policy))
    assert result.exit_code == 1
    assert "p.yaml line 2: backfil: unknown key" in result.stderr


def test_usage_errors() -> None:
    result = run("--trace", "x.csv")
    assert result.exit_code == 2 and "--cluster" in result.output
    result = run("--example", "--isolated", "guess")
    assert result.exit_code == 2 and "--isolated" in result.output
    for tick in ("inf", "nan", "-1", "86401"):  # inf: a replay that never ended
        result = run("--example", "--tick", tick)
        assert result.exit_code == 2 and "--tick" in result.output
    for option, value in (("--burst", "1e9"), ("--load", "inf"), ("--nodes", "100001")):
        result = run("generate", "--out", "never-made", option, value)  # 1e9: never ended
        assert result.exit_code == 2 and option in result.output
        assert not Path("never-made").exists()
    result = run("--example", "--policy", "las-fairshares")
    assert result.exit_code == 2
    assert "las-fairshares is neither a built-in policy (fifo, " in plain(result.stderr)


def test_an_out_that_cannot_be_written_is_refused_before_the_replay(tmp_path: Path) -> None:
    file = tmp_path / "results"
    file.write_text("")
    for out, why in ((file, "is a file, not a directory"), (file / "x", "cannot make")):
        result = run("--example", "--policy", "fifo", "--out", str(out))
        assert result.exit_code == 2
        assert why in plain(result.stderr)
        assert "replaying" not in result.stderr
    result = run("generate", "--out", str(file))
    assert result.exit_code == 2 and "is a file, not a directory" in plain(result.stderr)


def test_a_full_disk_is_named_after_the_results_are_shown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").symlink_to("/dev/full")  # every write: ENOSPC, as a full disk
    args = ["--example", "--policy", "fifo", "--isolated", "none", "--no-plots", "--json"]
    result = run(*args, "--out", str(out))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["policies"][0]["metrics"]["finished"] == 2000
    assert result.stderr.strip().endswith(
        f"error: cannot write into {out}: No space left on device"
    )


def test_list_policies_prints_one_per_line_name_first() -> None:
    result = run("--list-policies")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert names == [
        "fifo",
        "fairshare",
        "fairshare-backfill",
        "fairshare-backfill-preemption",
        "las-fairshare",
    ]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)


def test_progress_bar_shows_jobs_and_simulated_time() -> None:
    from io import StringIO

    from rich.console import Console

    from virtuai.cli.sim import _Bar

    buffer = StringIO()
    bar = _Bar(20_000, Console(file=buffer, force_terminal=True, width=100))
    assert bar.shown
    assert not _Bar(9_999, Console(file=StringIO(), force_terminal=True)).shown
    with bar:
        bar.update("las-fairshare", 5000, 20_000, 7200.0)
        bar._progress.refresh()
    text = buffer.getvalue()
    assert "las-fairshare" in text
    assert "5000/20000" in text
    assert "simulated 02:00:00" in text
