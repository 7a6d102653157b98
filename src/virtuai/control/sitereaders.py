"""The drivers the API reads logs through, on every instance, leading or not.

Only the leader drives sites (``control.sites``: launches, the batched
``squeue``), so only its driver mapping holds ``site:<name>``.  Any other
instance answering ``virtuai logs`` for a site job builds a driver of its own
from the site's row, used only to read (a log read is one ``tail`` over SSH
and changes nothing), and keeps it for the next read: one reused connection
per site, as the leader's.  No call is proxied to the leader, so logs stay
readable while it is down or being replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from virtuai.control.sites import driver_of
from virtuai.domain.sites import SiteState
from virtuai.drivers.base import Driver
from virtuai.drivers.slurm.driver import SlurmSiteDriver
from virtuai.store.models import SiteRow

SITE_PREFIX = "site:"
READER_SESSIONS = 2  # SSH channels at once per site for log reads


class DriversWithSiteReaders(Mapping[str, Driver]):
    """``drivers`` (shared with the loops), and for a site not in them, a reader."""

    def __init__(self, drivers: Mapping[str, Driver], sessions: sessionmaker[Session]) -> None:
        self._drivers = drivers
        self._sessions = sessions
        self._lock = threading.Lock()
        self._readers: dict[str, tuple[str, SlurmSiteDriver]] = {}  # name -> (token, driver)

    def __getitem__(self, key: str) -> Driver:
        driver = self._drivers.get(key)
        if driver is not None:
            return driver
        if not key.startswith(SITE_PREFIX):
            raise KeyError(key)
        return self._reader(key.removeprefix(SITE_PREFIX))

    def __iter__(self) -> Iterator[str]:
        return iter(self._drivers)

    def __len__(self) -> int:
        return len(self._drivers)

    def _reader(self, name: str) -> SlurmSiteDriver:
        with self._sessions() as session:
            row = session.scalar(select(SiteRow).where(SiteRow.name == name))
            if row is None or row.state == SiteState.REMOVED.value:
                raise KeyError(f"{SITE_PREFIX}{name}")
            session.expunge(row)
        with self._lock:
            known = self._readers.get(name)
            if known is not None and known[0] == row.token:
                return known[1]
            if known is not None:  # the site was removed and added again
                known[1].close()
            reader = driver_of(row, READER_SESSIONS)
            self._readers[name] = (row.token, reader)
            return reader

    def close(self) -> None:
        with self._lock:
            for _, reader in self._readers.values():
                reader.close()
            self._readers.clear()
