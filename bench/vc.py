"""Benchmark: virtual clusters of 1, 10 and 50 nodes over a small, a ~2 GB and the host image.

Run as root: ``.venv/bin/python bench/vc.py [--big-gb 2] [--repeat 3]``.

What it measures, on this machine's real kernel:

- ``VcRuntime.create`` wall time (the call returns once every node's init runs;
  it includes the final ``observe``), median of ``--repeat`` runs, with the
  time of each build step of the 50-node run;
- the disk a fresh node costs (``du``-style allocated bytes of its node directory);
- ``delete`` wall time;
- the naive alternative: ``cp -a`` of the image, then ``sync``, for a few nodes,
  extrapolated linearly to 50 nodes (time and disk).

Everything is made under a temporary state directory with a random prefix,
and removed at the end.  The last line is machine-readable::

    vc50_create_s=<s> per_node_disk_kb=<KiB> naive_copy_ratio=<naive 50-node copy / ours>

where ``vc50_create_s`` is the slowest 50-node median of the three images (small,
~2 GB, and the built-in ``host``), ``per_node_disk_kb`` is for the ~2 GB image, and the
ratio compares the ~2 GB image's naive 50-node copy with our 50-node create of it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from virtuai.vcruntime import NodeSpec, RuntimeConfig, VcRuntime, VcSpec
from virtuai.vcruntime.ipam import allocate_subnet
from virtuai.vcruntime.system import disk_usage

SIZES = (1, 10, 50)
PROGRAMS = ("/bin/sh", "/usr/bin/sleep", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/hostname")
CHUNK = 1 << 20


def tiny_rootfs(target: Path) -> Path:
    """A bootable root file system: a few programs and the libraries they load."""
    for d in ("bin", "usr/bin", "etc", "proc", "dev", "tmp", "var/tmp"):
        (target / d).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    files: set[str] = set(PROGRAMS)
    for program in PROGRAMS:
        out = subprocess.run(["ldd", program], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                files.add(path)
    for path in files:
        dest = target / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
    return target


def big_rootfs(target: Path, gigabytes: float) -> Path:
    """The tiny root plus ``gigabytes`` of incompressible-looking data in 64 MiB files."""
    tiny_rootfs(target)
    data = target / "data"
    data.mkdir()
    block = bytearray(os.urandom(CHUNK))
    total = max(1, round(gigabytes * 1024)) * CHUNK  # whole chunks: the loop always advances
    per_file = 64 * CHUNK
    written = 0
    index = 0
    while written < total:
        with open(data / f"blob{index:04d}", "wb") as f:
            for n in range(min(per_file, total - written) // CHUNK):
                block[:16] = (index * 1_000_003 + n).to_bytes(16, "little")  # no two chunks alike
                f.write(block)
                written += CHUNK
        index += 1
    subprocess.run(["sync", "-f", str(target)], check=True)
    return target


def free_subnet() -> str:
    """A /24 of 10.209.0.0/16 that no route of this host overlaps."""
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = [str(r["dst"]) for r in json.loads(out) if r.get("dst") not in (None, "default")]
    nets = [ipaddress.ip_network(u, strict=False) for u in used]
    return str(allocate_subnet([n for n in nets if n.version == 4], pool="10.209.0.0/16"))


@dataclass
class Row:
    creates: list[float] = field(default_factory=list)
    deletes: list[float] = field(default_factory=list)
    node_disk: list[float] = field(default_factory=list)  # bytes per fresh node
    steps: dict[str, float] = field(default_factory=dict)  # of the last create

    @property
    def create_s(self) -> float:
        return statistics.median(self.creates)

    @property
    def node_kib(self) -> float:
        return statistics.median(self.node_disk) / 1024


def measure_ours(runtime: VcRuntime, image: str, tenant: str, repeat: int) -> dict[int, Row]:
    results: dict[int, Row] = {}
    for n in SIZES:
        row = results[n] = Row()
        for r in range(repeat):
            spec = VcSpec(
                id=f"bench-{image}-{n}-{r}-{uuid.uuid4().hex[:6]}",
                name=f"b{n}",
                tenant=tenant,
                subnet=free_subnet(),
                nodes=tuple(NodeSpec(cpu_milli=100, memory=64 * 2**20) for _ in range(n)),
                image=image,
            )
            started = time.perf_counter()
            status = runtime.create(spec)
            row.creates.append(time.perf_counter() - started)
            assert status.running, status
            row.steps = dict(runtime.timings)
            nodes_dir = runtime.paths(spec.id).dir / "nodes"
            row.node_disk.append(sum(disk_usage(d) for d in nodes_dir.iterdir()) / n)
            check = runtime.run(spec.id, n - 1, ["hostname"])  # a node answers (not timed)
            assert check.stdout.decode().strip() == spec.hostname(n - 1), check
            started = time.perf_counter()
            runtime.delete(spec.id)
            row.deletes.append(time.perf_counter() - started)
    return results


def measure_naive(rootfs: Path, work: Path, copies: int) -> tuple[float, float]:
    """Seconds and KiB per node of ``cp -a`` + ``sync`` of the image, averaged over ``copies``."""
    seconds, kib = [], []
    for k in range(copies):
        target = work / f"copy{k}"
        started = time.perf_counter()
        subprocess.run(["cp", "-a", f"{rootfs}/.", str(target)], check=True)
        subprocess.run(["sync", "-f", str(target)], check=True)
        seconds.append(time.perf_counter() - started)
        kib.append(disk_usage(target) / 1024)
    for k in range(copies):
        shutil.rmtree(work / f"copy{k}")
    return statistics.mean(seconds), statistics.mean(kib)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-gb", type=float, default=2.0, help="size of the big image")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cluster size")
    parser.add_argument("--naive-copies", type=int, default=2, help="cp -a runs per image")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/vc.py needs root (namespaces, mounts, bridges, cgroups)", file=sys.stderr)
        return 2
    prefix = "b" + "".join(random.choices(string.ascii_lowercase, k=2))
    work = Path(tempfile.mkdtemp(prefix="vai-bench-", dir="/var/tmp"))
    tenant = f"bench-{uuid.uuid4().hex[:4]}"
    config = RuntimeConfig(
        state_dir=work / "state", prefix=prefix, cgroup_parent=f"virtuai-bench-{prefix}"
    )
    runtime = VcRuntime(config)
    try:
        runtime.check_host()
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"generating the images under {work} ...", flush=True)
        started = time.perf_counter()
        small_src = tiny_rootfs(work / "small-src")
        big_src = big_rootfs(work / "big-src", args.big_gb)
        print(f"  generated in {time.perf_counter() - started:.1f}s", flush=True)
        small = runtime.images.import_dir("small", small_src, move=True)
        big = runtime.images.import_dir("big", big_src, move=True)
        images = {"small": small, "big": big}
        for image in images.values():
            print(f"  image {image.name}: {image.size_bytes / 2**20:,.1f} MiB", flush=True)

        # the built-in host image too (the host's root as the lower layer; nothing to copy)
        ours = {n: measure_ours(runtime, n, tenant, args.repeat) for n in (*images, "host")}
        naive = {
            name: measure_naive(image.lower, work, args.naive_copies + (name == "small"))
            for name, image in images.items()
        }

        print()
        print(
            "| image | nodes | create (median) | create (max) | delete (median) | disk per node |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, rows in ours.items():
            for n, row in rows.items():
                print(
                    f"| {name} | {n} | {row.create_s:.3f} s | {max(row.creates):.3f} s | "
                    f"{statistics.median(row.deletes):.3f} s | {row.node_kib:.0f} KiB |"
                )
        print()
        for name, (sec, kib) in naive.items():
            print(
                f"naive cp -a + sync of {name}: {sec:.3f} s and {kib / 1024:,.1f} MiB per node; "
                f"50 nodes ~ {50 * sec:.1f} s and {50 * kib / 2**20:,.2f} GiB"
            )
        print()
        print("steps of the last 50-node create (s):")
        for name, rows in ours.items():
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[50].steps.items()))
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        vc50 = max(rows[50].create_s for rows in ours.values())
        per_node = ours["big"][50].node_kib
        ratio = 50 * naive["big"][0] / ours["big"][50].create_s
        print()
        print(
            f"vc50_create_s={vc50:.3f} per_node_disk_kb={per_node:.0f} naive_copy_ratio={ratio:.0f}"
        )
        return 0
    finally:
        for vc_id in runtime.list_vcs():
            runtime.delete(vc_id)
        for image in runtime.images.list():
            if not image.builtin:
                runtime.images.delete(image.name)
        with contextlib.suppress(Exception):
            layout = runtime.cgroups.layout
            for root in set(layout.roots.values()):
                parent = Path(root) / layout.parent
                if parent.is_dir():
                    parent.rmdir()
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["userdel", "vai-" + tenant], capture_output=True, check=False)


if __name__ == "__main__":
    sys.exit(main())
