"""The arguments that run a build over an image: the image's tree read-only, the writable
paths punched through it, and nothing through a symbolic link of the image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtuai.host.overimage import OverImageError, over_image


def _image(root: Path) -> Path:
    for d in ("usr/bin", "etc", "var/cache", "var/lib/apt", "tmp", "proc"):
        (root / d).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/hosts").write_text("")
    return root


def _pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_the_image_is_bound_read_only_with_the_writable_path_punched_through(
    tmp_path: Path,
) -> None:
    root = _image(tmp_path / "image")
    envs = Path("/var/lib/virtuai/ws/physics/.virtuai/envs")
    with over_image(root, [envs], None) as argv:
        assert argv[-1] == "--"
        ro = _pairs(argv, "--ro-bind")
        assert (str(root / "usr"), "/usr") in ro and (str(root / "etc"), "/etc") in ro
        # /var is made, its siblings of lib come from the image, lib/apt too; not /var itself.
        assert (str(root / "var/cache"), "/var/cache") in ro
        assert (str(root / "var/lib/apt"), "/var/lib/apt") in ro
        assert all(target not in ("/var", "/var/lib", "/tmp", "/proc") for _, target in ro)
        assert ("usr/bin", "/bin") in _pairs(argv, "--symlink")
        made = [argv[i + 1] for i, a in enumerate(argv) if a == "--dir"]
        assert made == [
            "/var",
            "/var/lib",
            *[str(p) for p in reversed(envs.parents[:-3])],
            str(envs),
        ]
        assert _pairs(argv, "--bind") == [(str(envs), str(envs))]


def test_as_root_the_image_is_reached_through_a_private_bind_and_the_user_is_dropped(
    tmp_path: Path,
) -> None:
    root = _image(tmp_path / "image")
    with over_image(root, [Path("/srv/envs")], (1234, 1235)) as argv:
        place = Path(argv[argv.index("as-user") + 4])
        assert place.is_dir() and (place.stat().st_mode & 0o777) == 0o755
        assert argv[argv.index("as-user") + 3 : argv.index("as-user") + 7] == [
            str(root), str(place), "1234", "1235",
        ]  # fmt: skip
        # bubblewrap sees the image where it is bound, not in the state directory.
        assert (str(place / "usr"), "/usr") in _pairs(argv, "--ro-bind")
    assert not place.exists()


def test_a_writable_path_through_a_symlink_of_the_image_is_refused(tmp_path: Path) -> None:
    root = _image(tmp_path / "image")
    os.symlink("var", root / "srv")
    with (
        pytest.raises(OverImageError, match="symbolic link"),
        over_image(root, [Path("/srv/envs")], None),
    ):
        pass
