"""Slurm's commands, each one round trip through a transport, parsed.

Batched by design: ``queue()`` is one ``squeue`` for all of this site's jobs,
``accounting(ids)`` one ``sacct`` for any number of jobs, ``nodes()`` one
``sinfo``.  The control loop calls them once per site per pass, never per job.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from virtuai.drivers.slurm.batch import (
    BatchRequest,
    batch_script,
    recovery_command,
    sbatch_command,
    submit_command,
)
from virtuai.drivers.slurm.states import (
    SACCT_FIELDS,
    AccountingEntry,
    QueueEntry,
    parse_sacct,
    parse_squeue,
)
from virtuai.drivers.slurm.transport import SiteUnreachable, Transport
from virtuai.errors import DriverError

SQUEUE_FORMAT = "%i|%T|%r|%N|%k"


class SubmitRefused(DriverError):
    """sbatch refused the job (bad partition, account, limits): Slurm's message says why."""

    code = "slurm_refused"


@dataclass(frozen=True, slots=True)
class SlurmNode:
    name: str
    partitions: tuple[str, ...]
    cpus: int
    memory_mb: int
    gpus: int
    state: str  # idle, mixed, allocated, down*, drained, ...

    @property
    def healthy(self) -> bool:
        bad = ("down", "drain", "fail", "maint", "unk", "not_responding", "inval")
        return not any(word in self.state.lower() for word in bad) and not self.state.endswith("*")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    default: bool
    max_time_s: int | None  # None: unlimited
    state: str


@dataclass(frozen=True, slots=True)
class Backlog:
    now: int  # the site's clock, seconds since the epoch
    pending_starts: list[int | None]  # squeue --start: None where Slurm gives no estimate
    running_ends: list[int]
    idle_cpus: int

    def expected_wait_s(self, cpus: int = 1) -> int | None:
        """How long a job of ``cpus`` CPUs would wait there now; None: Slurm cannot tell.

        Behind every pending job (first come, first served, as far as the estimates go):
        the latest start Slurm expects among them; with none pending, nothing if there are
        idle CPUs enough, else until the first running job ends (its time limit)."""
        if self.pending_starts:
            # Jobs Slurm gives no estimate (held, dependencies) do not tell either way.
            known = [t for t in self.pending_starts if t is not None]
            return max(0, max(known) - self.now) if known else None
        if self.idle_cpus >= cpus:
            return 0
        if self.running_ends:
            return max(0, min(self.running_ends) - self.now)
        return None


class SlurmClient:
    def __init__(self, transport: Transport, token: str) -> None:
        self.transport = transport
        self.token = token
        self._home: str | None = None

    def home(self) -> str:
        """The login user's home on the site (asked once): relative paths are under it."""
        if self._home is None:
            result = self.transport.run('printf %s "$HOME"')
            if result.status != 0 or not result.out.startswith("/"):
                raise SiteUnreachable(f"cannot read the home directory on the site: {result.err}")
            self._home = result.out
        return self._home

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.home()}/{path}"

    def submitted(self) -> dict[str, str]:
        """Attempt key -> Slurm job id of every job this installation has on the site
        (one squeue + one sacct, in one round trip)."""
        result = self.transport.run(recovery_command(self.token))
        if result.status != 0:
            raise SiteUnreachable(f"listing the site's jobs failed: {result.err}")
        found: dict[str, str] = {}
        for line in result.out.splitlines():
            slurm_id, _, comment = line.partition("|")
            key = comment.rsplit(":", 1)[-1]
            if slurm_id.strip() and key:
                found.setdefault(key, slurm_id.strip())
        return found

    def submit(self, req: BatchRequest, *, lookup: bool = True) -> tuple[str, bool]:
        """``(slurm job id, found)``: found when the attempt was already submitted.
        ``lookup=False`` when the caller knows it was not (one round trip less work)."""
        command = submit_command(req) if lookup else sbatch_command(req)
        result = self.transport.run(command, stdin=batch_script(req).encode())
        out = result.out.strip().splitlines()
        last = out[-1].strip() if out else ""
        if result.status != 0 or not last:
            message = result.err or last or f"sbatch exited with status {result.status}"
            if "command not found" in message:
                raise SiteUnreachable(f"slurm commands are not available: {message}")
            raise SubmitRefused(f"sbatch refused the job: {message}")
        if last.startswith("found "):
            return last.split()[1], True
        return last.split(";")[0], False

    def queue(self) -> dict[str, QueueEntry]:
        """This user's jobs that this installation submitted (by the comment's token)."""
        result = self.transport.run(f"squeue -h --me -t all -o '{SQUEUE_FORMAT}'")
        if result.status != 0:
            raise SiteUnreachable(f"squeue failed: {result.err}")
        prefix = f"virtuai:{self.token}:"
        return {k: v for k, v in parse_squeue(result.out).items() if v.comment.startswith(prefix)}

    def accounting(self, slurm_ids: list[str]) -> dict[str, AccountingEntry]:
        if not slurm_ids:
            return {}
        ids = ",".join(sorted(set(slurm_ids), key=int))
        result = self.transport.run(f"sacct -n -P -o {SACCT_FIELDS} -j {ids}")
        if result.status != 0:
            raise SiteUnreachable(f"sacct failed: {result.err}")
        return parse_sacct(result.out)

    def cancel(self, slurm_id: str, signal: int | None = None, *, batch: bool = False) -> None:
        """``scancel``; with ``signal``, only signal the job's steps (the checkpoint), or with
        ``batch`` its batch step (whose ``srun`` processes pass it on to their steps)."""
        flag = f"-s {int(signal)} " if signal is not None else ""
        if signal is not None and batch:
            flag = f"-b {flag}"
        result = self.transport.run(f"scancel {flag}{shlex.quote(slurm_id)}")
        if result.status != 0 and "already completed" not in result.err.lower():
            raise DriverError(f"scancel {slurm_id} failed: {result.err}")

    def nodes(self, partition: str | None) -> list[SlurmNode]:
        where = f"-p {shlex.quote(partition)} " if partition else ""
        result = self.transport.run(f"sinfo -h -N {where}-o '%N|%P|%c|%m|%G|%T'")
        if result.status != 0:
            raise SiteUnreachable(f"sinfo failed: {result.err}")
        merged: dict[str, SlurmNode] = {}
        for line in result.out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 6:
                continue
            name, part, cpus, mem, gres, state = parts
            part = part.rstrip("*")
            old = merged.get(name)
            merged[name] = SlurmNode(
                name=name,
                partitions=tuple(sorted({*(old.partitions if old else ()), part})),
                cpus=int(cpus) if cpus.isdigit() else 0,
                memory_mb=int(mem) if mem.isdigit() else 0,
                gpus=_gpus(gres),
                state=state,
            )
        return list(merged.values())

    def partitions(self) -> list[Partition]:
        result = self.transport.run("sinfo -h -o '%P|%l|%a'")
        if result.status != 0:
            raise SiteUnreachable(f"sinfo failed: {result.err}")
        out = []
        for line in result.out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                name, limit, state = parts
                out.append(Partition(name.rstrip("*"), name.endswith("*"), _limit(limit), state))
        return out

    def backlog(self, partition: str | None) -> Backlog:
        """The partition's queue as Slurm sees it, all users: when its pending jobs should
        start (``squeue --start``; None where Slurm has no estimate), when the running ones
        end, and the idle CPUs; times in the site's own clock, read in one round trip."""
        where = f"-p {shlex.quote(partition)} " if partition else ""
        result = self.transport.run(
            "export SLURM_TIME_FORMAT=%s; date +%s; echo @@; "
            f"squeue -h {where}-t PD --start -o '%S'; echo @@; "
            f"squeue -h {where}-t R,CG -o '%e'; echo @@; "
            f"sinfo -h {where}-o '%C'"
        )
        if result.status != 0:
            raise SiteUnreachable(f"squeue --start failed: {result.err}")
        parts = [p.split() for p in result.out.split("@@")]
        if len(parts) != 4 or not parts[0] or not parts[0][0].isdigit():
            raise SiteUnreachable(f"squeue --start: unexpected answer {result.out[:200]!r}")
        idle = 0
        for line in parts[3]:  # alloc/idle/other/total per partition line
            bits = line.split("/")
            if len(bits) == 4 and bits[1].isdigit():
                idle += int(bits[1])
        return Backlog(
            now=int(parts[0][0]),
            pending_starts=[int(t) if t.isdigit() else None for t in parts[1]],
            running_ends=[int(t) for t in parts[2] if t.isdigit()],
            idle_cpus=idle,
        )

    def read(self, path: str, offset: int, limit: int, fallback: str | None = None) -> bytes:
        """Bytes of ``path`` (``fallback`` while ``path`` does not exist); none if neither."""
        q = shlex.quote(path)
        pick = f"f={q}; "
        if fallback is not None:
            pick += f'[ -e "$f" ] || f={shlex.quote(fallback)}; '
        result = self.transport.run(
            f'{pick}[ -f "$f" ] && tail -c +{int(offset) + 1} "$f" | head -c {int(limit)}'
        )
        return result.stdout


def _gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        bits = item.split("(")[0].split(":")
        if bits and bits[0] == "gpu" and bits[-1].isdigit():
            total += int(bits[-1])
    return total


def _limit(text: str) -> int | None:
    """sinfo's ``%l``: ``infinite``, ``1:00:00``, ``2-00:00:00``, ``30:00``."""
    if text in {"infinite", "UNLIMITED", ""}:
        return None
    days, _, rest = text.rpartition("-")
    bits = [int(b) for b in rest.split(":") if b.isdigit()]
    while len(bits) < 3:
        bits.insert(0, 0)
    h, m, s = bits[-3:]
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s
