"""Benchmark: what one ``virtuai`` command costs, this tree beside a baseline, interleaved.

Run: ``.venv/bin/python bench/cli.py [--calls 30] [--baseline-src DIR]``.

A real ``virtuai up`` (SQLite, this tree) runs in a temporary home, with a
tenant, a member and one running ``sleep`` job that the submitted jobs depend
on (``afterok``), so that they stay queued: the figures measure the CLI and the
submission, not the machine running ``true``.  Each call is a new process, as
in a shell loop; the cases run in turn, call after call, so that all see the
same machine load.  For each case: the median and p90 wall time of a call and
its median CPU time (user + system, from ``wait4``).

- ``this``: the ``virtuai`` console script of this checkout (``.venv/bin/virtuai``).
- ``this-src`` / ``base-src``: the same entry point (``virtuai.cli.lean:main``)
  run from this tree's ``src`` and from ``--baseline-src`` (e.g.
  ``git archive main src | tar -x -C /tmp/base``, then ``/tmp/base/src``),
  each first on ``PYTHONPATH``: the same interpreter, the same shape of ``sys.path``.
- ``python``: ``python -c pass``, the floor of any Python command.
- ``request``: the same submit sent from this process by the lean path's own client
  (``cli.leanapi.Api``, a new connection each time): the server's share of a call.

Both trees are byte-compiled first (``compileall``), as a ``pip install`` leaves
them: with ``PYTHONDONTWRITEBYTECODE`` set, an editable install would otherwise
compile every module at every call.

The last line is machine-readable::

    cli_submit_ms=N cli_submit_cpu_ms=N base_submit_ms=N ratio=R python_ms=N request_ms=N load=L
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import VirtuaiServer, percentile

from virtuai.cli.leanapi import Api

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys; from virtuai.cli.lean import main; sys.argv[0] = 'virtuai'; sys.exit(main())"


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall and CPU ms of one process (stdout to /dev/null), and its exit status."""
    started = time.perf_counter()
    pid = os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)],
    )
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter() - started) * 1000
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="calls per case and command")
    parser.add_argument("--baseline-src", type=Path, help="another tree's src/ folder")
    args = parser.parse_args()

    trees = {"this-src": ROOT / "src"}
    if args.baseline_src:
        trees["base-src"] = args.baseline_src.resolve()
    for src in trees.values():
        compileall.compile_dir(str(src / "virtuai"), quiet=1)

    server = VirtuaiServer()
    try:
        server.start()
        token = server.setup_user()
        http = server.http(token)
        blocker = http.ok("POST", "/api/v1/jobs", {"command": ["sleep", "100000"]})["id"]
        http.close()
        env = {**server.env, "VIRTUAI_URL": server.url, "VIRTUAI_TOKEN": token}
        python = sys.executable
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "this": ([str(Path(python).parent / "virtuai")], env),
            "python": ([python, "-c", "pass"], env),
        }
        for name, src in trees.items():
            cases[name] = ([python, "-c", ENTRY], {**env, "PYTHONPATH": str(src)})
        held = ["--cpu", "0.1", "--memory", "16Mi", "-d", f"afterok:{blocker}"]
        commands = {
            "submit": ["submit", *held, "--", "true"],
            "submit --array 0-9": ["submit", "--array", "0-9", *held, "--", "true"],
            "jobs --json --limit 20": ["jobs", "--json", "--limit", "20"],
        }
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        api = Api([server.url], token)
        body = {"command": ["true"], "resources": {"cpu": "0.1", "memory": "16Mi", "gpu": 0}}
        body["dependency"] = f"afterok:{blocker}"
        load_before = os.getloadavg()
        for _ in range(args.calls):
            started = time.perf_counter()
            api.call("POST", "/api/v1/jobs", body=body)
            wall = (time.perf_counter() - started) * 1000
            results.setdefault(("submit", "request"), []).append((wall, float("nan")))
            for command, words in commands.items():
                for case, (argv, case_env) in cases.items():
                    if case == "python" and command != "submit":
                        continue
                    full = argv if case == "python" else [*argv, *words]
                    wall, cpu, code = run_once(full, case_env)
                    if code != 0:
                        raise RuntimeError(f"{case} {command}: exit {code}")
                    results.setdefault((command, case), []).append((wall, cpu))
        load_after = os.getloadavg()
    finally:
        server.stop()

    def figures(key: tuple[str, str]) -> tuple[float, float, float]:
        walls = [w for w, _ in results[key]]
        cpus = [c for _, c in results[key]]
        return statistics.median(walls), percentile(walls, 90), statistics.median(cpus)

    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    for command, case in results:
        wall, p90, cpu = figures((command, case))
        print(f"{command:24s} {case:9s} wall {wall:6.1f} ms (p90 {p90:6.1f})  cpu {cpu:5.1f} ms")
    this, _, this_cpu = figures(("submit", "this"))
    floor = figures(("submit", "python"))[0]
    base = figures(("submit", "base-src"))[0] if args.baseline_src else float("nan")
    this_src = figures(("submit", "this-src"))[0]
    load = (load_before[0] + load_after[0]) / 2
    request = figures(("submit", "request"))[0]
    print(
        f"cli_submit_ms={this:.1f} cli_submit_cpu_ms={this_cpu:.1f} base_submit_ms={base:.1f} "
        f"ratio={this_src / base:.2f} python_ms={floor:.1f} request_ms={request:.1f} "
        f"load={load:.2f}"
    )


if __name__ == "__main__":
    main()
