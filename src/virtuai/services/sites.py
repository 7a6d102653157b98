"""Sites: Slurm clusters the platform sends work to (administrators add and remove them).

``add_site`` checks what it is given before recording anything: the name, the
login (``user@host[:port]``), the key (written to a file only the server's user
can read, 0600, never to the database), the login node's host key (the given
known_hosts lines, or the key it presents now: trust on first use), and that
Slurm answers there (``sinfo``), which also tells the default partition.  A
site offers one pool, ``<site>:<partition>``.  ``remove_site`` drains: the site
takes no new jobs and is removed by the site loop once its last job ended.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from virtuai.domain.clock import Clock
from virtuai.domain.sites import SITE_NAME, SiteKind, SiteState, site_pool
from virtuai.domain.workload import JobState
from virtuai.drivers.slurm.driver import SiteConfig, build_site_driver, fetch_known_hosts
from virtuai.drivers.slurm.transport import SshTarget
from virtuai.errors import Conflict, InvalidRequest, NotFound, VirtuaiError
from virtuai.services.access import Caller
from virtuai.store.models import JobRow, SiteRow

ACCOUNT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PARTITION = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


@dataclass(frozen=True, slots=True)
class SiteRequest:
    name: str
    local: bool = False
    login: str | None = None
    identity: str | None = None  # the private key itself (the CLI reads the file)
    known_hosts: str | None = None
    partition: str | None = None
    account_map: dict[str, str] = field(default_factory=dict)
    max_jobs: int | None = None


@dataclass(frozen=True, slots=True)
class PreparedSite:
    """A request checked against the site itself, ready to be recorded."""

    request: SiteRequest
    token: str
    partition: str
    identity_path: str | None
    known_hosts: str


def prepare_site(
    session: Session, caller: Caller, keys_dir: Path, req: SiteRequest
) -> PreparedSite:
    """Check everything, talking to the site (call it with no transaction open)."""
    caller.require_admin("add sites")
    _validate(req)
    _require_free_name(session, req.name)
    session.rollback()
    identity_path: str | None = None
    known_hosts = ""
    if not req.local:
        assert req.login is not None and req.identity is not None
        known_hosts = req.known_hosts or _fetch(req.login)
        identity_path = str(_write_key(keys_dir, req.name, req.identity))
    token = secrets.token_hex(6)
    try:
        partition = _probe(req, identity_path, known_hosts, token)
    except VirtuaiError:
        if identity_path is not None:  # nothing of a refused site stays behind
            Path(identity_path).unlink(missing_ok=True)
        raise
    return PreparedSite(req, token, partition, identity_path, known_hosts)


def record_site(session: Session, caller: Caller, clock: Clock, prepared: PreparedSite) -> SiteRow:
    caller.require_admin("add sites")
    req = prepared.request
    _require_free_name(session, req.name)
    old = session.scalar(select(SiteRow).where(SiteRow.name == req.name))
    if old is not None:  # removed earlier: its name is free again
        session.delete(old)
        session.flush()
    now = clock.now()
    row = SiteRow(
        name=req.name,
        kind=SiteKind.SLURM.value,
        state=SiteState.ACTIVE.value,
        token=prepared.token,
        login=None if req.local else req.login,
        identity_path=prepared.identity_path,
        known_hosts=prepared.known_hosts,
        partition=prepared.partition,
        pool=site_pool(req.name, prepared.partition),
        account_map=dict(req.account_map),
        max_jobs=req.max_jobs,
        health="unknown",
        message="",
        partitions=[],
        capacity={},
        queue_depth=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def _require_free_name(session: Session, name: str) -> None:
    row = session.scalar(select(SiteRow).where(SiteRow.name == name))
    if row is not None and row.state != SiteState.REMOVED.value:
        raise Conflict(f"site {name} exists", field="name")


def _validate(req: SiteRequest) -> None:
    if not SITE_NAME.match(req.name):
        raise InvalidRequest(
            f"{req.name!r}: a site name is lower case letters, digits and '-', "
            "starting with a letter (at most 31)",
            field="name",
        )
    if req.local == (req.login is not None):
        raise InvalidRequest("give exactly one of --login and --local", field="login")
    if req.login is not None:
        try:
            SshTarget.parse(req.login, "", "")
        except ValueError:
            raise InvalidRequest(
                f"{req.login!r}: expected user@host[:port]", field="login"
            ) from None
        if not req.identity or "PRIVATE KEY" not in req.identity:
            raise InvalidRequest("an SSH site needs a private key (--identity)", field="identity")
    if req.partition is not None and not PARTITION.match(req.partition):
        raise InvalidRequest(f"{req.partition!r} is not a partition name", field="partition")
    for tenant, account in req.account_map.items():
        if not ACCOUNT.match(account):
            raise InvalidRequest(
                f"account {account!r} of tenant {tenant}: not a Slurm account name",
                field="account_map",
            )
    if req.max_jobs is not None and req.max_jobs < 1:
        raise InvalidRequest("max_jobs must be at least 1", field="max_jobs")


def _fetch(login: str) -> str:
    try:
        return fetch_known_hosts(login)
    except VirtuaiError as error:
        raise InvalidRequest(error.message, field="login") from error


def _write_key(keys_dir: Path, name: str, identity: str) -> Path:
    """The key in a file only the server's user can read: created 0600, in a 0700 directory."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(keys_dir, 0o700)
    path = keys_dir / f"{name}.key"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(identity if identity.endswith("\n") else identity + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def _probe(req: SiteRequest, identity_path: str | None, known_hosts: str, token: str) -> str:
    """Ask the site for its partitions (proves the login works): the one asked for, which
    must exist, or the default one."""
    config = SiteConfig(name=req.name, token=token, pool="")
    driver = build_site_driver(
        config, login=req.login, identity_path=identity_path, known_hosts=known_hosts
    )
    try:
        partitions = driver.client.partitions()
    except VirtuaiError as error:
        raise InvalidRequest(f"site {req.name}: {error.message}", field="login") from error
    finally:
        driver.close()
    if req.partition is not None:
        if req.partition not in {p.name for p in partitions}:
            known = ", ".join(p.name for p in partitions) or "none"
            raise InvalidRequest(
                f"site {req.name} has no partition {req.partition} (it has: {known})",
                field="partition",
            )
        return req.partition
    default = next((p.name for p in partitions if p.default), None)
    if default is None:
        if not partitions:
            raise InvalidRequest(f"site {req.name} has no partitions", field="partition")
        default = partitions[0].name
    return default


def list_sites(session: Session, caller: Caller) -> list[SiteRow]:
    """Every user may see the sites (names, health, capacity); keys are never shown."""
    return list(
        session.scalars(
            select(SiteRow).where(SiteRow.state != SiteState.REMOVED.value).order_by(SiteRow.name)
        )
    )


def get_site(session: Session, caller: Caller, name: str) -> SiteRow:
    row = session.scalar(
        select(SiteRow).where(SiteRow.name == name, SiteRow.state != SiteState.REMOVED.value)
    )
    if row is None:
        raise NotFound(f"no site {name}", field="name")
    return row


def remove_site(session: Session, caller: Caller, clock: Clock, name: str) -> SiteRow:
    """Drain: no new jobs; the site loop removes it when its last job has ended."""
    caller.require_admin("remove sites")
    row = get_site(session, caller, name)
    if row.state == SiteState.ACTIVE.value:
        row.state = SiteState.DRAINING.value
        row.updated_at = clock.now()
    return row


def site_for_job(session: Session, name: str) -> SiteRow:
    """The site a job asks for by name (``--site NAME``): active ones only."""
    row = session.scalar(select(SiteRow).where(SiteRow.name == name))
    if row is None or row.state == SiteState.REMOVED.value:
        raise InvalidRequest(f"no site {name}", field="site")
    if row.state != SiteState.ACTIVE.value:
        raise InvalidRequest(f"site {name} is draining: it takes no new jobs", field="site")
    return row


def ages(row: SiteRow, now: dt.datetime) -> float | None:
    return None if row.last_seen_at is None else (now - row.last_seen_at).total_seconds()


def running_jobs(session: Session, site: SiteRow) -> int:
    """Jobs of the platform the site holds now (admitted onto its pool, not finished)."""
    states = [s.value for s in JobState if s.holds_resources()]
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.pool == site.pool, JobRow.state.in_(states))
        )
        or 0
    )
