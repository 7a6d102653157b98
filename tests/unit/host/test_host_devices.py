"""The device nodes a sandbox binds for a task's GPUs (NVIDIA's naming), where they exist."""

from __future__ import annotations

from pathlib import Path

from virtuai.drivers.local.sandbox import _bwrap_argv
from virtuai.host.devices import gpu_devices


def test_only_the_tasks_gpus_and_the_control_devices_are_bound(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    devices = gpu_devices([2, 0], tmp_path)
    assert devices == tuple(str(tmp_path / n) for n in ("nvidia2", "nvidia0", "nvidiactl",
                                                         "nvidia-uvm"))  # fmt: skip
    # Declared GPUs (no device node) and CPU-only tasks bind nothing.
    assert gpu_devices([7], tmp_path) == ()
    assert gpu_devices([], tmp_path) == ()


def test_an_image_sandbox_binds_them_after_making_its_own_dev(tmp_path: Path) -> None:
    argv = _bwrap_argv("bwrap", tmp_path, "/work", "/bin/sleep", 3, (), ("/dev/nvidia1",))
    dev = argv.index("--dev")
    bound = argv.index("--dev-bind")
    assert argv[dev + 1] == "/dev" and bound > dev
    assert argv[bound + 1 : bound + 3] == ["/dev/nvidia1", "/dev/nvidia1"]
