from __future__ import annotations

import pytest

from virtuai.domain.datasets import check_path, needs_copy, parse_rsync_progress, place_job


@pytest.mark.parametrize(
    ("data_site", "asked", "stage", "site", "refused"),
    [
        ("hpc", None, False, "hpc", False),  # the data decides
        ("hpc", "any", False, "hpc", False),
        ("hpc", "hpc", False, "hpc", False),
        ("hpc", "other", False, "hpc", True),  # elsewhere only with a copy ...
        ("hpc", "other", True, "hpc", True),  # ... and copies are not made from a site
        (None, None, False, None, False),
        (None, "hpc", False, None, True),
        (None, "hpc", True, "hpc", False),  # data here, copied to the site asked for
        (None, "any", True, "any", False),  # the platform chooses; a site gets a copy
        (None, None, True, None, False),
    ],
)
def test_a_job_goes_where_its_data_is_unless_it_is_copied(
    data_site: str | None, asked: str | None, stage: bool, site: str | None, refused: bool
) -> None:
    placement = place_job(data_site, asked, stage)
    assert placement.site == site
    assert bool(placement.refused) == refused
    if refused and not stage:
        assert "--stage" in placement.refused


def test_a_copy_is_made_only_for_a_job_that_asked_and_runs_away_from_its_data() -> None:
    assert needs_copy(None, True, "hpc")
    assert not needs_copy(None, False, "hpc")
    assert not needs_copy(None, True, None)
    assert not needs_copy("hpc", True, "hpc")


@pytest.mark.parametrize(
    ("path", "ok"),
    [("/scratch/data/x", True), ("relative", False), ("/a/../b", False), ("/a\x00", False)],
)
def test_dataset_paths_are_absolute_and_plain(path: str, ok: bool) -> None:
    assert (check_path(path) is None) == ok


def test_rsync_progress_lines_are_read() -> None:
    seen = parse_rsync_progress("      8,388,608 100%   95.12MB/s    0:00:00 (xfr#2, to-chk=0/3)")
    assert seen is not None
    assert (seen.bytes_done, seen.percent, seen.rate) == (8_388_608, 100, "95.12MB/s")
    assert seen.shown() == "100% (8.0 MiB at 95.12MB/s)"
    assert parse_rsync_progress("sending incremental file list") is None
    assert parse_rsync_progress("") is None
