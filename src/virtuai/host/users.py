"""One unprivileged Unix account per tenant, so that tasks never run as root.

When the server runs as root, each tenant's tasks run as a system user named
``<prefix><tenant>`` (``vai-physics``), created on first use.  The kernel then
keeps tenants apart on this machine (files, signals, /proc) and nothing a task
does is done as root.  When the server is not root it cannot switch users:
tasks run as the server's own user and the driver says so in a warning.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
import time
from pathlib import Path

from virtuai.errors import DriverError
from virtuai.host.files import locked

MAX_NAME = 32  # useradd's limit on Linux
_VALID = re.compile(r"^[a-z_][a-z0-9_-]*$")
_INVALID_CHARS = re.compile(r"[^a-z0-9_-]")
# useradd exit codes: 9 = the name is taken (someone else created it first),
# 10 = /etc/passwd or /etc/group is locked by a concurrent useradd.
_NAME_IN_USE = 9
_LOCKED = 10
_ATTEMPTS = 20
# useradd is not safe against itself: two at once for one new name both exit 0, the later
# rewriting the earlier's entry (its "name in use" check comes before its lock), maybe
# with another uid.  A gang's tasks launched at once on two machines of one host then ran
# as two uids, and one was refused the workspace the other had made and given to its uid
# (issue #9).  Every virtuai server on a host looks up and creates under this lock, beside
# the file it guards.
USERADD_LOCK = Path("/etc/.virtuai-useradd.lock")


def unix_name(tenant: str, prefix: str) -> str:
    """The deterministic account name of ``tenant``.

    Lowercase letters, digits, ``-`` and ``_`` are kept; any other character
    becomes ``-``.  Names longer than 32 characters, and names changed by that
    cleaning (so ``a.b`` and ``a-b`` stay distinct), end with 8 hex digits of
    a hash of the tenant name.
    """
    wanted = prefix + tenant
    clean = _INVALID_CHARS.sub("-", wanted.lower())
    if not _VALID.match(clean):
        clean = "t" + clean
    if clean == wanted and len(clean) <= MAX_NAME:
        return clean
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
    return f"{clean[: MAX_NAME - 9]}-{digest}"


def current_user() -> tuple[int, int, str]:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return uid, os.getegid(), name


def ensure_tenant_user(tenant: str, prefix: str) -> tuple[int, int, str]:
    """``(uid, gid, name)`` of the account that runs ``tenant``'s tasks, created if needed.

    Idempotent and safe when several servers (or tests) create the same user at
    once: they take turns (``USERADD_LOCK``), and "already exists" (another tool made
    it) counts as success; the account is read back.
    Not root: the current user, since no other can be assumed.
    """
    if os.geteuid() != 0:
        return current_user()
    name = unix_name(tenant, prefix)
    account = _lookup(name)
    if account is not None:
        return _checked(account)
    try:
        with locked(USERADD_LOCK):
            return _create(name, tenant)
    except OSError as exc:  # the lock's file (useradd's own failures are DriverErrors)
        raise DriverError(
            f"cannot create the Unix user {name} for tenant {tenant}: "
            f"cannot lock {USERADD_LOCK}: {exc.strerror}"
        ) from None


def _create(name: str, tenant: str) -> tuple[int, int, str]:
    """Look ``name`` up and create it if missing, holding ``USERADD_LOCK``."""
    for _ in range(_ATTEMPTS):
        account = _lookup(name)
        if account is not None:
            return _checked(account)
        try:
            proc = _useradd(name, tenant)
        except FileNotFoundError:
            raise DriverError(
                f"cannot create the Unix user {name} for tenant {tenant}: no useradd command"
            ) from None
        if proc.returncode in (0, _NAME_IN_USE):
            continue  # read it back at the top of the loop
        if proc.returncode == _LOCKED:
            time.sleep(0.05)
            continue
        raise DriverError(
            f"cannot create the Unix user {name} for tenant {tenant}: "
            f"useradd exited with {proc.returncode}: {proc.stderr.strip()}"
        )
    account = _lookup(name)
    if account is None:
        raise DriverError(f"cannot create the Unix user {name} for tenant {tenant}")
    return _checked(account)


def _useradd(name: str, tenant: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--comment",
            "virtuai tenant " + re.sub(r"[^A-Za-z0-9_. -]", "-", tenant)[:64],
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
    )


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _checked(account: pwd.struct_passwd) -> tuple[int, int, str]:
    if account.pw_uid == 0 or account.pw_gid == 0:
        raise DriverError(f"refusing to run tasks as {account.pw_name}: it has root's uid or gid")
    return account.pw_uid, account.pw_gid, account.pw_name
