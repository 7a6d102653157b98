"""Datasets: a tenant's data, where it is, and copies of it staged where a job runs.

A dataset is a path on a site (``hpc:/scratch/data/x``) or on this platform's
own nodes (a path they all see).  A job naming one (``--data NAME``) runs only
where it is; with ``--stage`` it may run elsewhere, once a copy is there.
Copies go from here to a site (rsync over the site's SSH, as its login user):
``local -> site``; a copy between two sites, or from a site to here, is not
made (refused at submit time).

Copy states: ``copying -> ready | failed``; a ready or failed copy is copied
again (``-> copying``) for a job submitted after it started, so a job never
reads data older than itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "DATA_ENV",
    "CopyState",
    "Placement",
    "RsyncProgress",
    "check_path",
    "needs_copy",
    "parse_rsync_progress",
    "place_job",
    "staged_path",
]

DATA_ENV = "VIRTUAI_DATA"  # where a job finds its dataset (or the copy made for it)
MAX_PATH = 4096
_PROGRESS = re.compile(r"^\s*([\d,.]+)\s+(\d{1,3})%\s+(\S+/s)\s+(\S+)")


class CopyState(enum.StrEnum):
    COPYING = "copying"
    READY = "ready"
    FAILED = "failed"


def check_path(path: str) -> str | None:
    """Why ``path`` is not a dataset path (None: it is): absolute, no ``..``, no NUL."""
    if not path.startswith("/"):
        return "must be an absolute path"
    if len(path) > MAX_PATH:
        return f"must be at most {MAX_PATH} characters"
    if "\x00" in path or "\n" in path:
        return "must not contain NUL or newline characters"
    if ".." in path.split("/"):
        return "must not contain '..'"
    return None


def staged_path(tenant: str, dataset: str) -> str:
    """Where a copy goes on a site, relative to its login user's home."""
    return f"virtuai/data/{tenant}/{dataset}"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a job with data may run: ``site`` as ``--site`` takes it (a site's name,
    ``any``, or None: here), or why it cannot run where it asked (``refused``)."""

    site: str | None
    refused: str = ""


def place_job(data_site: str | None, asked: str | None, stage: bool) -> Placement:
    """Where a job may run, given where its data is and what it asked for (``asked``: a
    site's name, ``any`` or None).

    Without ``stage`` the data decides.  With it, data here goes where the job asked
    (a copy is made if that is a site); data on a site stays there (no copies from
    a site).
    """
    where = f"site {data_site}" if data_site else "this platform's nodes"
    if not stage:
        if asked in (None, "any") or asked == data_site:
            return Placement(data_site)
        return Placement(
            data_site,
            refused=f"its data is on {where}, not at {asked} (add --stage to copy it there)",
        )
    if data_site is not None:
        if asked in (None, "any", data_site):
            return Placement(data_site)
        return Placement(
            data_site,
            refused=f"its data is on {where}: copies are made from here to a site, not from a site",
        )
    return Placement(asked)


def needs_copy(data_site: str | None, stage: bool, run_site: str | None) -> bool:
    """A copy is made when a job asked for one and runs at a site its data is not on."""
    return stage and run_site is not None and run_site != data_site


@dataclass(frozen=True, slots=True)
class RsyncProgress:
    bytes_done: int
    percent: int
    rate: str

    def shown(self) -> str:
        return f"{self.percent}% ({_size(self.bytes_done)} at {self.rate})"


def parse_rsync_progress(line: str) -> RsyncProgress | None:
    """One line (between ``\\r``/``\\n``) of ``rsync --info=progress2`` in the C locale:
    ``  1,048,576  33%   50.00MB/s    0:00:00 (xfr#1, to-chk=2/4)``."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    done = int(re.sub(r"[,.]", "", match.group(1)))
    return RsyncProgress(done, min(100, int(match.group(2))), match.group(3))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
