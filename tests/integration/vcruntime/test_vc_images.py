"""Imported images: a tiny root file system built from a few host programs and their libraries."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from vc_helpers import MakeSpec

from support.vclusters import tiny_rootfs
from virtuai.errors import Conflict, InvalidRequest
from virtuai.vcruntime import NodeSpec, VcRuntime


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_rootfs(tmp_path / "rootfs")


@pytest.fixture
def image_name(runtime: VcRuntime) -> Iterator[str]:
    name = "tiny-" + os.urandom(3).hex()
    yield name
    runtime.images.delete(name)


def test_import_dir_is_read_only_and_boots_nodes(
    runtime: VcRuntime, tiny: Path, image_name: str, make_spec: MakeSpec
) -> None:
    image = runtime.images.import_dir(image_name, tiny)
    assert image.size_bytes > 100_000 and not image.builtin
    listed = {i.name: i for i in runtime.images.list()}
    assert listed["host"].builtin and listed[image_name].size_bytes == image.size_bytes
    with pytest.raises(OSError) as denied:
        (image.lower / "etc/new").write_text("x")
    assert denied.value.errno == errno.EROFS
    with pytest.raises(Conflict):
        runtime.images.import_dir(image_name, tiny)

    spec = make_spec(2, image=image_name, nodes=(NodeSpec(), NodeSpec()))
    runtime.create(spec)
    try:
        script = "hostname; echo w > /written && ls /"
        result = runtime.run(spec.id, 1, ["sh", "-c", script], user="root")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().split()
        assert lines[0] == spec.hostname(1) and "written" in lines and "shared" in lines
        assert not (image.lower / "written").exists()
        empty = runtime.run(spec.id, 0, ["ls", "/written"])
        assert empty.returncode != 0  # node 1's write is node 1's
        runtime.suspend(spec.id)
        with pytest.raises(Conflict, match="used by"):
            runtime.delete_image(image_name)  # its upper layers still need it
    finally:
        runtime.delete(spec.id)


def test_import_tar(runtime: VcRuntime, tiny: Path, image_name: str, tmp_path: Path) -> None:
    tarball = tmp_path / "tiny.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tiny), "."], check=True)
    image = runtime.images.import_tar(image_name, tarball)
    assert (image.lower / "usr/bin/sleep").is_file()
    assert image.source.startswith("tar:")


def test_an_image_without_sleep_is_refused(runtime: VcRuntime, tmp_path: Path) -> None:
    rootfs = tiny_rootfs(tmp_path / "nosleep", programs=("/bin/sh",))
    with pytest.raises(InvalidRequest, match="no sleep program"):
        runtime.images.import_dir("nosleep", rootfs)
    assert not (runtime.state_dir / "images" / "nosleep").exists()
    assert not list((runtime.state_dir / "images").glob(".import-*"))
