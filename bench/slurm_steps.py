"""What a job step on another node costs: ``srun`` through the hub and a step agent,
against a step on the batch task's own node, measured in the same run.

A two-node job's tasks are started as the job's command starts them (the runner
bundle, a job token, MASTER_ADDR/MASTER_PORT on loopback); no server.  The batch
script times N steps of each kind: ``srun -N 1 true`` (node 0 only: the baseline),
``srun -N 1 -r 1 true`` (node 1 only, through the hub) and ``srun true`` (both).
Then one step moves OUTPUT_MIB of output from the remote rank back to the script.

    .venv/bin/python bench/slurm_steps.py [--steps 50]
"""

from __future__ import annotations

import argparse
import base64
import socket
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from virtuai.cli.slurmjob import runner_source
from virtuai.slurmrun.command import RUNNER_ENV, batch_command

OUTPUT_MIB = 64
SCRIPT = """#!/bin/bash
t() {{ date +%s.%N; }}
a=$(t); for i in $(seq {n}); do srun -N 1 true; done
b=$(t); for i in $(seq {n}); do srun -N 1 -r 1 true; done
c=$(t); for i in $(seq {n}); do srun true; done
d=$(t); srun -N 1 -r 1 head -c {size} /dev/zero | wc -c > bytes
e=$(t)
echo "$a $b $c $d $e" > times
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "name": "bench",
        "ntasks": 2,
        "ntasks_per_node": 1,
        "cpus_per_task": 1,
        "mem_per_node": 2**30,
        "submit_dir": "/tmp",
        "submit_host": "bench",
        "user": "bench",
        "output": "out",
        "error": "out",
        "open_mode": "truncate",
        "time_limit_s": 3600,
        "signal": None,
        "array": None,
    }
    script = SCRIPT.format(n=args.steps, size=OUTPUT_MIB * 2**20)
    source = base64.b64encode(zlib.compress(runner_source().encode())).decode()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for index in (1, 0):
            env = {
                "PATH": "/usr/bin:/bin",
                "VIRTUAI_JOB_ID": "1",
                "VIRTUAI_TASK_INDEX": str(index),
                "VIRTUAI_NUM_TASKS": "2",
                "VIRTUAI_JOB_TOKEN": "vaij_1_0_" + "ab" * 32,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                RUNNER_ENV: source,
            }
            command = batch_command(config, script, [])
            procs.append(subprocess.Popen(command, env=env, cwd=tmp))
        codes = [p.wait(timeout=600) for p in procs]
        if codes != [0, 0]:
            sys.exit(f"the job failed: {codes}: {(Path(tmp) / 'out').read_text()}")
        a, b, c, d, e = (float(x) for x in (Path(tmp) / "times").read_text().split())
        moved = int((Path(tmp) / "bytes").read_text())
    local, remote, both = ((y - x) / args.steps * 1000 for x, y in ((a, b), (b, c), (c, d)))
    print(f"steps of `true`, {args.steps} each (ms per step):")
    print(f"  node 0 only (baseline)      {local:7.1f}")
    print(f"  node 1 only (hub + agent)   {remote:7.1f}   x{remote / local:.2f}")
    print(f"  both nodes                  {both:7.1f}   x{both / local:.2f}")
    print(f"output of a remote rank: {moved / 2**20:.0f} MiB in {e - d:.2f} s")
    print(f"  ({moved / 2**20 / (e - d):.0f} MiB/s through agent, hub and srun)")


if __name__ == "__main__":
    main()
