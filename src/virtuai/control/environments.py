"""The builder of environments: makes every ``building`` environment ready (or failed).

``tick()`` is a reconcile step: it reads the environments still ``building`` and
starts a worker thread for each one not already being built by this process,
so a long ``pip install`` never holds up scheduling.  After a crash the rows are
still ``building`` and no thread of the new process builds them: the next tick
starts them again.  The build itself is one shell script run as the tenant's
Unix user (when the server is root), in the tenant's workspace:

- it takes ``flock`` on ``<dir>.lock``, so an orphan build of a killed server
  finishes (or dies) before the new one starts;
- a directory with the ready marker is reused as it is (content addressing:
  same inputs, same directory); anything else is removed and built again;
- the marker is written last, so a half-built directory is never taken for a
  ready one.

An environment for an image (``env create --image``) is built the same way, inside
a bubblewrap sandbox over the image's root (``host.overimage``) with only the
tenant's environments directory writable, so that the image's Python makes it.

Directories of a tenant that no environment names any more are removed by
``collect()`` (as the tenant's user too: the server never deletes in a
tenant-writable tree as root).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from virtuai.domain.clock import Clock
from virtuai.domain.pyenvs import BASE_PATH, ENVS_SUBDIR, READY_MARKER, EnvOptions
from virtuai.errors import VirtuaiError
from virtuai.host import files
from virtuai.host.overimage import over_image
from virtuai.host.sandbox import JobImage
from virtuai.host.users import ensure_tenant_user
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import EnvironmentRow, TenantRow

log = logging.getLogger(__name__)

# $1 build directory, $2 its Python, $3 1 = install the requirements on stdin, $4 the
# server's Python.  The server's pip (if the tenant's user can run it) installs into a venv
# made without pip: ten times faster than seeding every venv with its own pip.
BUILD_SCRIPT = f"""
set -eu
dir=$1 python=$2 install=$3 server=$4
mkdir -p -- "$(dirname -- "$dir")"
exec 9>>"$dir.lock"
flock 9
if [ -e "$dir/{READY_MARKER}" ]; then
  echo "virtuai: reusing the existing build $dir"
  exit 0
fi
rm -rf -- "$dir"
echo "virtuai: creating a virtual environment in $dir with $python"
if "$server" -m pip --version >/dev/null 2>&1; then
  "$python" -m venv --without-pip -- "$dir"
  set -- "$server" -m pip --python "$dir/bin/python"
elif [ "$install" = 1 ]; then
  "$python" -m venv -- "$dir"
  set -- "$dir/bin/python" -m pip
else
  "$python" -m venv --without-pip -- "$dir"
fi
if [ "$install" = 1 ]; then
  echo "virtuai: installing the requirements"
  # Kept with the build; a file, since /dev/stdin (a pipe of root's) cannot be reopened.
  cat > "$dir/requirements.txt"
  "$@" install --no-input -r "$dir/requirements.txt"
fi
date -u +%Y-%m-%dT%H:%M:%SZ > "$dir/{READY_MARKER}"
echo "virtuai: ready"
"""
# Remove the build directories ($2...) in the envs directory $1 (never a path outside it).
COLLECT_SCRIPT = """
set -eu
cd -- "$1" || exit 0
shift
for d in "$@"; do
  exec 9>>"$d.lock"
  if flock -n 9; then rm -rf -- "$d" "$d.lock"; fi
  exec 9>&-
done
"""
_PASS_THROUGH = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True, slots=True)
class EnvBuildConfig:
    options: EnvOptions
    user_prefix: str = "vai-"
    max_parallel: int = 2
    collect_every: int = 30  # ticks between two collections of unused directories


@dataclass(frozen=True, slots=True)
class _Job:
    env_id: int
    tenant: str
    digest: str
    path: str
    python: str
    requirements: str
    image: str | None


class EnvBuilder:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        config: EnvBuildConfig,
        wake: Callable[[], None] | None = None,
        images: Callable[[str], JobImage] | None = None,
    ) -> None:
        """``images``: an image's root on this machine (``VcRuntime.job_image``); ``None``:
        this server has no images, and builds for images fail saying so."""
        self._sessions = sessions
        self._images = images
        self._clock = clock
        self._config = config
        self._wake = wake
        self._lock = threading.Lock()
        self._running: dict[int, threading.Thread] = {}
        self._jobs: dict[int, _Job] = {}
        self._ticks = 0
        config.options.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def tick(self) -> None:
        with read_transaction(self._sessions) as session:
            rows = session.execute(
                select(EnvironmentRow, TenantRow.name)
                .join(TenantRow)
                .where(EnvironmentRow.state == "building")
                .order_by(EnvironmentRow.id)
            ).all()
            jobs = [
                _Job(r.id, tenant, r.digest, r.path, r.python, r.requirements, r.image)
                for r, tenant in rows
            ]
        with self._lock:
            busy = {(j.tenant, j.digest) for j in self._building()}
            for job in jobs:
                if len(self._running) >= self._config.max_parallel:
                    break
                if job.env_id in self._running or (job.tenant, job.digest) in busy:
                    continue  # the same inputs are being built: reuse them when done
                busy.add((job.tenant, job.digest))
                thread = threading.Thread(
                    target=self._build, args=(job,), name=f"env-{job.env_id}", daemon=True
                )
                self._running[job.env_id] = thread
                self._jobs[job.env_id] = job
                thread.start()
        self._ticks += 1
        if self._ticks % self._config.collect_every == 1:
            self.collect()

    def wait_idle(self, timeout: float) -> None:
        """Join the running builds (tests, and a clean stop)."""
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)

    def _building(self) -> list[_Job]:
        return [self._jobs[i] for i in self._running if i in self._jobs]

    def _build(self, job: _Job) -> None:
        try:
            ok, reason = self._run_build(job)
        except Exception as exc:  # a worker must record why, whatever went wrong
            log.exception("building environment %d failed", job.env_id)
            ok, reason = False, f"the build could not run: {exc}"
        now = self._clock.now()
        with transaction(self._sessions) as session:
            session.execute(
                update(EnvironmentRow)
                .where(EnvironmentRow.id == job.env_id, EnvironmentRow.state == "building")
                .values(
                    state="ready" if ok else "failed",
                    reason="" if ok else reason,
                    updated_at=now,
                    ready_at=now if ok else None,
                )
            )
        with self._lock:
            self._running.pop(job.env_id, None)
            self._jobs.pop(job.env_id, None)
        if self._wake is not None:
            self._wake()

    def _run_build(self, job: _Job) -> tuple[bool, str]:
        log_path = self._config.options.log_path(job.env_id)
        with log_path.open("ab") as out, contextlib.ExitStack() as stack:
            os.chmod(log_path, 0o600)
            try:
                root, python, server = self._builder_of(job)
            except _CannotBuild as exc:
                out.write(f"virtuai: {exc}\n".encode())
                return False, str(exc)
            uid, gid = self._account(job.tenant)
            env = self._environment(job.tenant)
            install = "1" if job.requirements.strip() else "0"
            argv = ["/bin/sh", "-c", BUILD_SCRIPT, "build", job.path, python, install, server]
            if root is not None:  # over the image: only the envs writable, a home of its own
                envs = Path(job.path).parent
                self._make_envs_dir(envs, uid, gid)
                env["HOME"] = "/tmp"
                user = None if uid is None or gid is None else (uid, gid)
                argv = [*stack.enter_context(over_image(root, [envs], user)), *argv]
                uid = gid = None  # the sandbox drops to the tenant's user itself
            proc = subprocess.run(
                argv,
                input=job.requirements.encode(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
                cwd="/",
                check=False,
            )
        if proc.returncode != 0:
            return False, f"the build exited with {proc.returncode}: {_last_line(log_path)}"
        return True, ""

    def _builder_of(self, job: _Job) -> tuple[Path | None, str, str]:
        """The image's root the build runs over (``None``: the host); the Python that makes
        the environment; the server's Python, whose pip installs into it (over an image, a
        name that does not run: the environment's own pip installs)."""
        name = f"python{job.python}"
        if job.image is None:
            python = shutil.which(name, path=BASE_PATH)
            if python is None:
                raise _CannotBuild(f"no Python {job.python} on the server ({name} not found)")
            return None, python, sys.executable
        if self._images is None:
            raise _CannotBuild(f"image {job.image}: this server has no images")
        try:
            root = Path(self._images(job.image).root)
        except VirtuaiError as exc:
            raise _CannotBuild(f"image {job.image}: {exc.message}") from None
        python = next(
            (f"{d}/{name}" for d in BASE_PATH.split(":") if os.path.lexists(f"{root}{d}/{name}")),
            None,
        )
        if python is None:
            raise _CannotBuild(f"no Python {job.python} in image {job.image} ({name} not found)")
        return root, python, "/nonexistent/server-python"

    def _make_envs_dir(self, path: Path, uid: int | None, gid: int | None) -> None:
        """The tenant's environments directory, made by the tenant's user (it is bound into
        the sandbox, so it must exist; root never writes in a tenant-writable tree)."""
        subprocess.run(
            ["mkdir", "-p", "--", str(path)],
            env={"PATH": BASE_PATH, "LANG": "C.UTF-8"},
            user=uid,
            group=gid,
            extra_groups=[] if os.geteuid() == 0 else None,
            cwd="/",
            check=True,
            capture_output=True,
        )

    def _account(self, tenant: str) -> tuple[int | None, int | None]:
        """The tenant's user when root (its workspace made first), else the server's own."""
        if os.geteuid() != 0:
            return None, None
        uid, gid, _ = ensure_tenant_user(tenant, self._config.user_prefix)
        # The tenant's already (left as it is), or made and given to it in one step.
        files.create_owned_dir(self._config.options.workspaces_dir / tenant, uid, gid)
        return uid, gid

    def _environment(self, tenant: str) -> dict[str, str]:
        """A clean environment plus the server's package-index settings (pip's, uv's, proxies)."""
        env = {
            "PATH": BASE_PATH,
            "HOME": str(self._config.options.workspaces_dir / tenant),
            "LANG": "C.UTF-8",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_CACHE_DIR": "1",
        }
        for key, value in os.environ.items():
            if key.startswith(("PIP_", "UV_")) or key in _PASS_THROUGH:
                env.setdefault(key, value)
        return env

    def collect(self) -> None:
        """Remove build directories (and logs) no environment names any more."""
        with read_transaction(self._sessions) as session:
            wanted = {
                (tenant, digest)
                for tenant, digest in session.execute(
                    select(TenantRow.name, EnvironmentRow.digest).join(TenantRow)
                )
            }
            env_ids = set(session.scalars(select(EnvironmentRow.id)))
        with self._lock:
            wanted |= {(j.tenant, j.digest) for j in self._building()}
        root = self._config.options.workspaces_dir
        for envs in root.glob(f"*/{ENVS_SUBDIR}"):
            tenant = envs.parent.parent.name
            unused = sorted(
                p.name
                for p in envs.iterdir()
                if len(p.name) == 64 and p.is_dir() and (tenant, p.name) not in wanted
            )
            if unused:
                self._remove(tenant, envs, unused)
        for path in self._config.options.logs_dir.glob("*.log"):
            if path.stem.isdigit() and int(path.stem) not in env_ids:
                path.unlink(missing_ok=True)

    def _remove(self, tenant: str, envs: Path, names: list[str]) -> None:
        uid, gid = self._account(tenant)
        proc = subprocess.run(
            ["/bin/sh", "-c", COLLECT_SCRIPT, "collect", str(envs), *names],
            capture_output=True,
            text=True,
            env={"PATH": BASE_PATH, "LANG": "C.UTF-8"},
            user=uid,
            group=gid,
            extra_groups=[] if os.geteuid() == 0 else None,
            cwd="/",
            check=False,
        )
        if proc.returncode != 0:
            log.warning("cannot remove unused environments in %s: %s", envs, proc.stderr.strip())


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:500] if lines else ""


class _CannotBuild(Exception):
    """The build cannot start; the message is the environment's reason."""
