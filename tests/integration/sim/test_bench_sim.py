"""``bench/sim.py``, the issue's benchmark, runs end to end (tiny sizes: its figures are in
``docs/benchmarks.md``) and ends with the line the issue asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "sim.py"
NUMBER = r"[0-9]+(\.[0-9]+)?"


TINY = ["--jobs", "300", "--nodes", "8", "--speed-jobs", "1000", "--speed-nodes", "10"]


def bench(script: str, *args: str) -> list[str]:
    """The lines ``bench/<script>`` printed, run with ``args``; it must exit 0."""
    result = subprocess.run(
        [sys.executable, str(BENCH.with_name(script)), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_the_benchmark_runs_and_prints_its_last_line() -> None:
    lines = bench("sim.py", *TINY, "--speed-quotas", "cohort")
    # The speed replay with quotas, and its tenth with and without them as baselines.
    speeds = [line.split(" passes=")[0] for line in lines if line.startswith("speed jobs=")]
    assert speeds == [
        "speed jobs=100 nodes=1 quotas=none",
        "speed jobs=100 nodes=1 quotas=cohort",
        "speed jobs=1000 nodes=10 quotas=cohort",
    ], lines
    assert any(
        re.fullmatch(f"speed quotas \\(cohort\\) cost {NUMBER}x the time", line) for line in lines
    )
    assert re.fullmatch(
        f"jct_ratio_vs_fifo={NUMBER} jain_ratio_vs_fairshare={NUMBER} "
        f"rho_max={NUMBER} sim_100k_s={NUMBER}",
        lines[-1],
    ), lines[-1]
    assert re.fullmatch(
        f"light_gap_closed=-?{NUMBER} worst_tenant_vs_fairshare={NUMBER}", lines[-2]
    ), lines[-2]


def test_the_many_tenants_benchmark_runs_and_keeps_the_timeline_small() -> None:
    """``bench/sim_tenants.py``: the same jobs of 200 tenants and of 4 keep timelines of
    about the same size (a number per tenant at every event would be 50x)."""
    last = bench("sim_tenants.py", "--tenants", "200", "--jobs", "1500", "--nodes", "16")[-1]
    match = re.fullmatch(f"tenants_cpu_ratio=({NUMBER}) timeline_bytes_ratio=({NUMBER})", last)
    assert match is not None, last
    assert float(match.group(3)) < 1.5, last


def test_the_isolated_replays_benchmark_runs_and_both_ways_agree() -> None:
    """``bench/sim_isolated.py``: the isolated replays in workers give the completion times
    made in the caller (it exits non-zero otherwise), and prints its ratio."""
    last = bench("sim_isolated.py", "--jobs", "2000", "--nodes", "24")[-1]
    pattern = (
        f"isolated_wall_ratio=({NUMBER}) replay_s=({NUMBER}) isolated_s=({NUMBER}) workers=(\\d+)"
    )
    assert re.fullmatch(pattern, last) is not None, last
