"""Benchmark of staging a dataset to a Slurm site (``docs/benchmarks.md``, Staging).

Run (root): ``scripts/slurm-dev.sh start`` then ``.venv/bin/python bench/staging.py``.
Both sides copy the same files to the cluster's login node over SSH with the
same key, into a fresh directory each time, in interleaved rounds (so load from
others slows both alike):

- baseline: ``rsync -a`` by hand (``-e ssh``), output discarded;
- staging: what ``control.staging`` runs (``drivers.slurm.staging.Copy``: rsync with
  ``--partial --mkpath --info=progress2``, its progress read line by line).

The last line is ``staging_mb_per_s=N rsync_mb_per_s=N ratio=N``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from virtuai.drivers.slurm.staging import Copy, CopyTarget, rsync_argv

DEV_DIR = Path("/tmp/virtuai-slurm-dev")
LOGIN = "vsdlab@10.252.77.5"


def ssh(identity: str, known: str, command: str) -> None:
    subprocess.run(
        [
            "ssh",
            "-i",
            identity,
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "BatchMode=yes",
            LOGIN,
            command,
        ],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="dataset size (MiB, 8 files)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    identity = str(DEV_DIR / "ssh" / "id_ed25519")
    known = str(DEV_DIR / "ssh" / "known_hosts")
    source = Path(tempfile.mkdtemp(prefix="vai-bench-data-"))
    for i in range(8):
        (source / f"part-{i}.bin").write_bytes(os.urandom(args.mb * 2**20 // 8))
    plain_s: list[float] = []
    staged_s: list[float] = []
    try:
        for n in range(args.rounds):
            dest = f"/home/vsdlab/vai-bench/plain-{n}"
            shell = shlex.join(["ssh", "-i", identity, "-o", f"UserKnownHostsFile={known}"])
            ssh(identity, known, f"mkdir -p {dest}")
            start = time.perf_counter()
            subprocess.run(
                ["rsync", "-a", "-e", shell, f"{source}/", f"{LOGIN}:{dest}/"],
                check=True,
                capture_output=True,
            )
            plain_s.append(time.perf_counter() - start)

            target = CopyTarget(LOGIN, identity, known, f"/home/vsdlab/vai-bench/staged-{n}")
            copy = Copy(rsync_argv(str(source), target))
            start = time.perf_counter()
            copy.start()
            while not copy.done:
                time.sleep(0.005)
            staged_s.append(time.perf_counter() - start)
            assert copy.status == 0, copy.error
            assert copy.progress is not None and copy.progress.percent == 100
            ssh(identity, known, "rm -rf /home/vsdlab/vai-bench")
    finally:
        shutil.rmtree(source, ignore_errors=True)
    plain = args.mb / statistics.median(plain_s)
    staged = args.mb / statistics.median(staged_s)
    print(f"dataset: {args.mb} MiB in 8 files, {args.rounds} rounds (medians)")
    print(
        f"rsync by hand: {statistics.median(plain_s):.3f} s, staging: "
        f"{statistics.median(staged_s):.3f} s"
    )
    print(f"staging_mb_per_s={staged:.0f} rsync_mb_per_s={plain:.0f} ratio={staged / plain:.2f}")


if __name__ == "__main__":
    main()
