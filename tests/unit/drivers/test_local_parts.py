"""The local driver's pure parts: names, cgroup discovery and limits on a fake cgroupfs.

A fake tree is enough here (the kernel is exercised by the integration tests);
it is also the only way to cover cgroup v2 on a machine that runs v1.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from virtuai.drivers.local.driver import task_env
from virtuai.drivers.local.supervisor import _decode_status
from virtuai.host.cgroups import (
    CgroupLayout,
    Limits,
    detect_layout,
    own_limits,
    read_mounts,
)
from virtuai.host.users import MAX_NAME, unix_name


def test_unix_names() -> None:
    assert unix_name("physics", "vai-") == "vai-physics"
    long = unix_name("a-very-long-tenant-name-for-a-research-group", "vai-")
    assert len(long) == MAX_NAME and long.startswith("vai-a-very-long")
    assert long == unix_name("a-very-long-tenant-name-for-a-research-group", "vai-")
    assert unix_name("a.b", "vai-") != unix_name("a-b", "vai-")
    assert unix_name("Física", "vai-").startswith("vai-f")
    assert all(len(unix_name(t, "virtuai-tenant-")) <= MAX_NAME for t in ("x", "y" * 40))


def _mountinfo(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _v1_line(n: int, path: Path, options: str) -> str:
    return f"{n} 1 0:{n} / {path} rw,relatime - cgroup cgroup rw,{options}"


def _v2_line(path: Path, root: str = "/") -> str:
    return f"99 1 0:99 {root} {path} rw,relatime - cgroup2 cgroup2 rw"


def test_hybrid_system_uses_v1(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")  # no memory: not usable
    dirs = {name: tmp_path / name for name in ("memory", "cpu,cpuacct", "pids")}
    for d in dirs.values():
        d.mkdir()
    mountinfo = _mountinfo(
        tmp_path,
        [
            _v1_line(1, dirs["memory"], "memory"),
            _v1_line(2, dirs["cpu,cpuacct"], "cpu,cpuacct"),
            _v1_line(3, dirs["pids"], "pids"),
            _v2_line(unified),
        ],
    )
    assert {m.version for m in read_mounts(mountinfo)} == {1, 2}
    layout, reason = detect_layout("virtuai", mountinfo)
    assert layout is not None, reason
    assert layout.version == 1 and layout.roots["cpu"] == str(dirs["cpu,cpuacct"])
    assert CgroupLayout.from_json(layout.to_json()) == layout
    layout.prepare()
    task = layout.task("job1.0.0")
    task.create(Limits(cpu_milli=1500, memory=2**28, pids=64))
    memory_dir = dirs["memory"] / "virtuai" / "job1.0.0"
    assert (memory_dir / "memory.limit_in_bytes").read_text() == str(2**28)
    assert (dirs["cpu,cpuacct"] / "virtuai/job1.0.0/cpu.cfs_quota_us").read_text() == "150000"
    assert (dirs["pids"] / "virtuai/job1.0.0/pids.max").read_text() == "64"
    (memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert task.oom_kills() == 2


def test_unified_system_uses_v2(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "virtuai").mkdir(parents=True)
    for d in (root, root / "virtuai"):
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("")
    layout, reason = detect_layout("virtuai", _mountinfo(tmp_path, [_v2_line(root)]))
    assert layout is not None, reason
    assert layout.version == 2 and layout.label == "cgroup-v2"
    layout.prepare()
    task = layout.task("job2.1.3")
    (root / "virtuai" / "job2.1.3").mkdir()
    (root / "virtuai" / "job2.1.3" / "memory.swap.max").write_text("max")
    task.create(Limits(cpu_milli=250, memory=2**30, pids=100))
    path = root / "virtuai" / "job2.1.3"
    assert task.dirs() == [path]
    assert (path / "cpu.max").read_text() == "25000 100000"
    assert (path / "memory.max").read_text() == str(2**30)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "pids.max").read_text() == "100"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert task.oom_kills() == 1


def test_no_memory_controller_means_no_cgroups(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    layout, reason = detect_layout("virtuai", _mountinfo(tmp_path, [_v1_line(1, cpu, "cpu")]))
    assert layout is None and "memory" in reason


def test_own_limits_v2_takes_the_smallest_of_the_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    leaf = root / "machine.slice" / "box"
    leaf.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (root / "machine.slice" / "memory.max").write_text(f"{4 * 2**30}\n")
    (root / "machine.slice" / "cpu.max").write_text("max 100000\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "cpu.max").write_text("150000 100000\n")
    proc_cgroup = tmp_path / "cgroup-of-self"
    proc_cgroup.write_text("0::/machine.slice/box\n")
    mountinfo = _mountinfo(tmp_path, [_v2_line(root)])
    assert own_limits(mountinfo, proc_cgroup) == (1500, 4 * 2**30)


def test_own_limits_v1_ignores_the_unlimited_value(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    (memory / "box").mkdir(parents=True)
    (memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (memory / "box" / "memory.limit_in_bytes").write_text(f"{2**31}\n")
    proc_cgroup = tmp_path / "cgroup-of-self"
    proc_cgroup.write_text("4:memory:/box\n0::/\n")
    mountinfo = _mountinfo(tmp_path, [_v1_line(1, memory, "memory")])
    assert own_limits(mountinfo, proc_cgroup) == (None, 2**31)


def test_task_environment() -> None:
    env = task_env({"RANK": "2", "HOME": "/data", "CUDA_VISIBLE_DEVICES": "7"}, "/w", "u", (1, 3))
    assert env["RANK"] == "2" and env["HOME"] == "/data" and env["USER"] == "u"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert task_env({}, "/w", "u", ())["CUDA_VISIBLE_DEVICES"] == ""
    assert "VIRTUAI_TOKEN" not in task_env({}, "/w", "u", ())


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, (0, None)),
        (3 << 8, (3, None)),
        (signal.SIGKILL, (137, signal.SIGKILL)),
        (signal.SIGTERM, (143, signal.SIGTERM)),
    ],
)
def test_exit_status_convention(status: int, expected: tuple[int, int | None]) -> None:
    assert _decode_status(status) == expected
    assert os.WIFSIGNALED(status) == (expected[1] is not None)
