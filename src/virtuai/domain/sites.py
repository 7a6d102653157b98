"""Sites: where work runs besides this platform's own nodes (a Slurm cluster, ...).

A site offers one pool named ``<site>:<partition>`` (e.g. ``hpc:gpu``): quotas,
cohorts, fair share and priority classes apply to it as to any pool.  A job runs
on a site only when it asks for the site's pool (``--site NAME`` sets it): the
scheduler never spreads a job that names no pool onto a site, and a gang is
never split between the local nodes and a site.

States: ``active -> draining -> removed``; a draining site takes no new jobs and
is removed once none of its jobs is left.
"""

from __future__ import annotations

import enum
import re

SITE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
SITE_POOL_SEPARATOR = ":"


# The site of this platform's own machines (every other site is a Slurm site's name).
LOCAL_SITE = "local"


class SiteState(enum.StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REMOVED = "removed"


class SiteKind(enum.StrEnum):
    SLURM = "slurm"


def site_pool(site: str, partition: str) -> str:
    return f"{site}{SITE_POOL_SEPARATOR}{partition}"


def is_site_pool(pool: str | None) -> bool:
    return pool is not None and SITE_POOL_SEPARATOR in pool


def site_of_pool(pool: str | None) -> str | None:
    if pool is None or SITE_POOL_SEPARATOR not in pool:
        return None
    return pool.split(SITE_POOL_SEPARATOR, 1)[0]
