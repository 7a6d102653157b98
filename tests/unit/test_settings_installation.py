"""Host-global names derive from the installation id unless set explicitly."""

from __future__ import annotations

import os
from pathlib import Path

from virtuai.settings import LocalDriverSettings, Settings, VirtualClusterSettings
from virtuai.vcruntime.naming import validate_prefix


def test_every_host_global_name_carries_the_id(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path).for_installation("k3x9qa")
    assert settings.local.cgroup_name == "virtuai-k3x9qa"
    assert settings.local.user_prefix == "vaik3x9-"
    assert settings.vclusters.cgroup_parent == "virtuai-vcs-k3x9qa"
    assert validate_prefix(settings.vclusters.prefix) == "vk3"
    if os.geteuid() == 0:
        assert settings.workspaces_dir == Path("/var/lib/virtuai/k3x9qa/workspaces")
    else:
        assert settings.workspaces_dir == tmp_path / "workspaces"


def test_two_ids_give_disjoint_names(tmp_path: Path) -> None:
    a = Settings(home=tmp_path).for_installation("abc123")
    b = Settings(home=tmp_path).for_installation("xyz789")
    assert a.local.cgroup_name != b.local.cgroup_name
    assert a.local.user_prefix != b.local.user_prefix
    assert a.vclusters.prefix != b.vclusters.prefix
    assert a.vclusters.cgroup_parent != b.vclusters.cgroup_parent
    assert a.workspaces_dir != b.workspaces_dir or os.geteuid() != 0


def test_what_the_administrator_set_stays(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        workspaces=tmp_path / "ws",
        local=LocalDriverSettings(cgroup_name="lab", user_prefix="lab-"),
        vclusters=VirtualClusterSettings(prefix="lab"),
    ).for_installation("k3x9qa")
    assert settings.local.cgroup_name == "lab" and settings.local.user_prefix == "lab-"
    assert settings.vclusters.prefix == "lab"
    assert settings.vclusters.cgroup_parent == "virtuai-vcs-k3x9qa"  # not set: derived
    assert settings.workspaces_dir == tmp_path / "ws"


def test_the_empty_id_keeps_the_names_of_before(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.for_installation("") == settings
    assert settings.local.cgroup_name == "virtuai" and settings.local.user_prefix == "vai-"
