"""A Slurm site as a virtuai driver: one ``sbatch`` per job attempt.

The control plane places a job on the site's nodes (that is admission against
the one ledger); Slurm decides where it really runs.  Every task of the attempt
is launched through this driver, but they share one Slurm job: the first launch
submits it (after looking the attempt's key up on the site, so a crash between
``sbatch`` and recording the handle never makes a second job), the others find
it.  ``observe`` never calls Slurm: it answers from what the last ``refresh``
(one ``squeue``, one ``sacct`` for what left the queue, per site per pass, run
by ``control.sites``) saw.  While the site is unreachable every task keeps its
last known state.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal as signals
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from virtuai.domain.resources import GpuDevice, Node, Resources
from virtuai.drivers.base import (
    Handle,
    LogStream,
    StopReason,
    TaskResult,
    TaskSpec,
    TemporaryDriverError,
)
from virtuai.drivers.slurm.batch import BatchRequest, NativeBatch
from virtuai.drivers.slurm.client import Backlog, Partition, SlurmClient, SlurmNode
from virtuai.drivers.slurm.states import AccountingEntry, QueueEntry, result_of
from virtuai.drivers.slurm.transport import (
    LocalTransport,
    SiteUnreachable,
    SshTarget,
    SshTransport,
    Transport,
)
from virtuai.slurmrun.command import parse_batch_command

log = logging.getLogger(__name__)

MIB = 1024 * 1024
RENDEZVOUS_PORT = 29500  # torch.distributed's default; MASTER_ADDR is set on the site


@dataclass(frozen=True, slots=True)
class SiteConfig:
    name: str
    token: str  # marks this installation's jobs on the site (their --comment)
    pool: str  # the pool the site's nodes offer, e.g. "hpc:gpu"
    partition: str | None = None
    account_map: Mapping[str, str] = field(default_factory=dict)  # tenant -> Slurm account
    log_dir: str = "virtuai/logs"  # on the site, relative to the login user's home
    work_root: str = "virtuai/work"  # default working directory root on the site
    max_jobs: int | None = None  # Slurm jobs of this installation queued or running at once


@dataclass(slots=True)
class SiteObservation:
    """What the driver last saw of its site (read by the control loop and the API)."""

    queue: dict[str, QueueEntry] = field(default_factory=dict)
    ended: dict[str, AccountingEntry] = field(default_factory=dict)
    nodes: list[SlurmNode] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    backlog: Backlog | None = None
    last_seen: float | None = None
    unreachable_since: float | None = None
    error: str = ""


def node_name(site: str, slurm_node: str) -> str:
    return f"{site}:{slurm_node}"


class SlurmSiteDriver:
    def __init__(self, config: SiteConfig, client: SlurmClient) -> None:
        self.config = config
        self.client = client
        self.name = f"site:{config.name}"
        self.seen = SiteObservation()
        self._lock = threading.Lock()
        # Launches come from the life cycle's worker threads, the tasks of one gang at
        # once: the lookup, the --max-jobs check and the sbatch of a key happen under it,
        # so a gang makes one Slurm job and the limit cannot be passed by a race.
        self._launch_lock = threading.Lock()
        # Attempt key -> Slurm job id: what this process submitted, plus (once, before the
        # first launch) what the site already had from earlier processes.
        self._submitted: dict[str, str] = {}
        self._recovered = False
        self._since_refresh: set[str] = set()  # submitted since the last squeue
        # scancel to retry: id -> (signal, to the batch step)
        self._pending_stops: dict[str, tuple[int | None, bool]] = {}
        self._stopped: set[tuple[str, str]] = set()
        # Ended allocations whose steps' records are still on their way: id -> when first seen.
        self._settling: dict[str, float] = {}
        # Node names recorded before this process saw the site (until sinfo answers).
        self.known_nodes: frozenset[str] = frozenset()

    # -- inventory --------------------------------------------------------------------------

    def refresh_inventory(self) -> None:
        """One ``sinfo`` for nodes, one for partitions, one ``squeue --start`` for the
        partition's backlog."""
        nodes = self.client.nodes(self.config.partition)
        partitions = self.client.partitions()
        backlog = self.client.backlog(self.config.partition)
        with self._lock:
            self.seen.nodes, self.seen.partitions = nodes, partitions
            self.seen.backlog = backlog
            self._seen_now()

    def inventory(self) -> list[Node]:
        return [
            Node(
                name=node_name(self.config.name, n.name),
                pool=self.config.pool,
                site=self.config.name,
                capacity=Resources(n.cpus * 1000, n.memory_mb * MIB, n.gpus),
                gpus=tuple(GpuDevice(i, "slurm-gres", 0) for i in range(n.gpus)),
            )
            for n in self.seen.nodes
            if n.healthy
        ]

    def node_names(self) -> frozenset[str]:
        seen = frozenset(node_name(self.config.name, n.name) for n in self.seen.nodes)
        return seen | self.known_nodes

    def rendezvous(self, node: str) -> tuple[str, int]:
        return node.partition(":")[2], RENDEZVOUS_PORT

    # -- tasks ------------------------------------------------------------------------------

    def launch(self, spec: TaskSpec) -> Handle:
        key = f"{spec.job_id}.{spec.attempt}"
        with self._launch_lock:
            if not self._recovered:
                # Anything an earlier process submitted is on the site now: one listing,
                # then every new attempt is a plain sbatch (a crash between sbatch and
                # recording its id is covered, and the hot path does no lookup).
                self._submitted = {**self.client.submitted(), **self._submitted}
                self._recovered = True
            slurm_id = self._submitted.get(key)
            request = self._request(spec, key)
            if slurm_id is None:
                self._check_max_jobs()
                slurm_id, found = self.client.submit(request, lookup=False)
                with self._lock:
                    self._since_refresh.add(slurm_id)
                self._submitted[key] = slurm_id
                log.info(
                    "site %s: attempt %s is slurm job %s%s",
                    self.config.name,
                    key,
                    slurm_id,
                    " (found: submitted before)" if found else "",
                )
        handle: Handle = {
            "site": self.config.name,
            "slurm_id": slurm_id,
            "key": key,
            "index": spec.index,
            "log_dir": request.log_dir,
            "checkpoint_signal": spec.checkpoint_signal,
        }
        if request.native is not None:
            handle["native"] = True  # the script is Slurm's batch step: see read_log, stop
        return handle

    def _check_max_jobs(self) -> None:
        limit = self.config.max_jobs
        if limit is None:
            return
        with self._lock:
            active = {i for i, e in self.seen.queue.items() if e.state in _STILL_QUEUED}
            active |= self._since_refresh
        if len(active) >= limit:
            # Not a failure: the life cycle launches it when one of them has ended.
            raise TemporaryDriverError(
                f"site {self.config.name} has its {limit} jobs (--max-jobs) queued or running"
            )

    def _request(self, spec: TaskSpec, key: str) -> BatchRequest:
        tasks = int(spec.env.get("WORLD_SIZE", "1") or 1)
        per_node = int(spec.env.get("LOCAL_WORLD_SIZE", "1") or 1)
        workdir = spec.workdir
        if spec.create_workdir or not workdir:
            workdir = f"{self.config.work_root}/{spec.tenant}"
        workdir = self.client.absolute(workdir)
        log_dir = self.client.absolute(self.config.log_dir)
        return BatchRequest(
            key=key,
            token=self.config.token,
            command=spec.command,
            env=spec.env,
            tasks=tasks,
            nodes=max(1, tasks // max(1, per_node)),
            cpu_milli=spec.resources.cpu_milli,
            memory=spec.resources.memory,
            gpus=spec.resources.gpu,
            walltime_s=spec.walltime_s,
            log_dir=log_dir,
            workdir=workdir,
            partition=self.config.partition,
            account=self.config.account_map.get(spec.tenant),
            checkpoint_signal=spec.checkpoint_signal,
            checkpoint_grace_s=spec.checkpoint_grace_s,
            native=native_batch(spec.command, tasks),
        )

    def observe(self, handle: Handle) -> TaskResult | None:
        slurm_id = str(handle["slurm_id"])
        with self._lock:
            ended = self.seen.ended.get(slurm_id)
        if ended is None:
            return None
        return result_of(ended, time.time())

    def status(self, handle: Handle) -> str:
        """Slurm's own words for a job still in its hands (``PENDING (Resources)``)."""
        entry = self.seen.queue.get(str(handle["slurm_id"]))
        return entry.shown if entry is not None else ""

    def stop(self, handle: Handle, reason: StopReason) -> None:
        """Cancel: ``scancel``.  Preempt: the checkpoint signal to the steps first (the
        control loop ``scancel``s after the grace), or plain ``scancel`` for SIGTERM,
        which Slurm follows with SIGKILL after its KillWait."""
        slurm_id = str(handle["slurm_id"])
        sig = int(handle.get("checkpoint_signal", signals.SIGTERM))
        once = (slurm_id, reason.value)
        if once in self._stopped:
            return
        signal = sig if reason is StopReason.PREEMPT and sig != signals.SIGTERM else None
        self._stopped.add(once)
        batch = bool(handle.get("native"))
        try:
            self.client.cancel(slurm_id, signal=signal, batch=batch)
        except SiteUnreachable:
            # Recorded as asked; the site loop sends it when the site answers again.
            self._pending_stops[slurm_id] = (signal, batch)

    def retry_stops(self) -> None:
        for slurm_id, (signal, batch) in list(self._pending_stops.items()):
            self.client.cancel(slurm_id, signal=signal, batch=batch)
            del self._pending_stops[slurm_id]

    def kill(self, handle: Handle) -> None:
        self.client.cancel(str(handle["slurm_id"]))

    def read_log(self, handle: Handle, stream: LogStream, offset: int, limit: int) -> bytes:
        if handle.get("native") and handle["index"] != 0:
            return b""  # the script runs once, as task 0; Slurm's steps write to it
        ext = "out" if stream is LogStream.STDOUT else "err"
        path = f"{handle['log_dir']}/vai-{handle['key']}.{handle['index']}.{ext}"
        fallback = None
        if handle.get("native") and stream is LogStream.STDERR:
            # Until the runner has linked the script's error file (or when it could not
            # open it), the batch step's own output says why.
            fallback = f"{handle['log_dir']}/vai-{handle['key']}.batch.out"
        return self.client.read(path, offset, limit, fallback=fallback)

    def release(self, handle: Handle) -> None:
        self._submitted.pop(str(handle.get("key")), None)

    # -- the batched pass -------------------------------------------------------------------

    def refresh(self, slurm_ids: Iterable[str]) -> None:
        """One ``squeue``; one ``sacct`` for the wanted jobs no longer active in it."""
        wanted = set(slurm_ids)
        with self._lock:
            # Only what was submitted before this squeue started can be in its answer.
            submitted_before = set(self._since_refresh)
        try:
            queue = self.client.queue()
            gone = [i for i in wanted if i not in queue or queue[i].state not in _STILL_QUEUED]
            gone = [i for i in gone if i not in self.seen.ended]
            accounted = self.client.accounting(gone)
        except SiteUnreachable as error:
            with self._lock:
                if self.seen.unreachable_since is None:
                    self.seen.unreachable_since = time.time()
                self.seen.error = error.message
            raise
        now = time.time()
        with self._lock:
            self.seen.queue = queue
            self._since_refresh -= submitted_before
            for slurm_id, entry in accounted.items():
                if entry.ended and self._settled(slurm_id, entry, now):
                    self.seen.ended[slurm_id] = entry
            for slurm_id in gone:
                if slurm_id not in accounted and slurm_id not in queue:
                    # Neither queue nor accounting knows it: a site without sacct, or a job
                    # purged long ago.  It ended, and nothing tells how.
                    self.seen.ended[slurm_id] = AccountingEntry(
                        slurm_id, "UNKNOWN", 0, 0, None, now, 0, "", "", "vanished from the site"
                    )
            # Forget ended jobs nobody asks about any more.
            for slurm_id in list(self.seen.ended):
                if slurm_id not in wanted:
                    del self.seen.ended[slurm_id]
            for slurm_id in list(self._settling):
                if slurm_id not in wanted or slurm_id in self.seen.ended:
                    del self._settling[slurm_id]
            self._seen_now()

    def _settled(self, slurm_id: str, entry: AccountingEntry, now: float) -> bool:
        """Whether an ended allocation's outcome is final: its steps' records are in, or
        they have had STEP_RECORD_WAIT_S to arrive.  The batch script ends (and with it
        the allocation) as soon as its ``srun`` returns, while the step's slurmstepd may
        still be counting OOM kills: read too early, an OOM-killed job is a plain exit 1.
        Only a FAILED allocation waits: that is the outcome a step's record can change."""
        if entry.state != "FAILED" or not entry.steps_active:
            return True
        first = self._settling.setdefault(slurm_id, now)
        return now - first >= STEP_RECORD_WAIT_S

    def _seen_now(self) -> None:
        self.seen.last_seen = time.time()
        self.seen.unreachable_since = None
        self.seen.error = ""

    def unreachable_reason(self) -> str:
        since = self.seen.unreachable_since
        if since is None:
            return ""
        at = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"site {self.config.name} unreachable since {at}: {self.seen.error}"

    def close(self) -> None:
        self.client.transport.close()


def native_batch(command: Sequence[str], tasks: int) -> NativeBatch | None:
    """The sizes of a ``virtuai sbatch`` job (its command's config), for the site's sbatch;
    ``None`` for any other job.  ``tasks`` (one per node) stands in for what an older
    client did not send."""
    parsed = parse_batch_command(command)
    if parsed is None:
        return None
    config = parsed.config
    signal = config.get("signal") or None
    return NativeBatch(
        name=str(config.get("name") or "sbatch"),
        nodes=int(config.get("nodes") or tasks),
        ntasks=int(config["ntasks"]),
        ntasks_per_node=int(config.get("ntasks_per_node") or 1),
        cpus_per_task=int(config["cpus_per_task"]),
        gpus_per_node=int(config.get("gpus_per_node") or 0),
        gpus_per_task=int(config.get("gpus_per_task") or 0),
        gpu_type=str(config.get("gpu_type") or ""),
        signal=""
        if signal is None
        else f"{'B:' if signal.get('batch_only') else ''}{int(signal['number'])}"
        f"@{int(signal['seconds'])}",
    )


# How long an ended allocation waits for its steps' accounting records (seconds): a step
# that never reports (its node died) must not hold the job's outcome for ever.
STEP_RECORD_WAIT_S = 30.0

_STILL_QUEUED = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
)


def build_site_driver(
    config: SiteConfig,
    *,
    login: str | None,
    identity_path: str | None,
    known_hosts: str,
    max_sessions: int = 8,
    env: Mapping[str, str] | None = None,
) -> SlurmSiteDriver:
    """Over SSH when ``login`` is given, else Slurm's commands on this machine."""
    transport: Transport
    if login is None:
        transport = LocalTransport(env)
    else:
        if identity_path is None:
            raise ValueError("an SSH site needs an identity key")
        target = SshTarget.parse(login, identity_path, known_hosts)
        transport = SshTransport(target, max_sessions=max_sessions)
    return SlurmSiteDriver(config, SlurmClient(transport, config.token))


def fetch_known_hosts(login: str) -> str:
    """The login node's host keys as known_hosts lines (trust on first use, at `site add`),
    read by OpenSSH's own ``ssh-keyscan``."""
    target = SshTarget.parse(login, "", "")
    try:
        proc = subprocess.run(
            ["ssh-keyscan", "-T", "10", "-p", str(target.port), target.host],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SiteUnreachable(f"cannot read the host key of {target.host}: {error}") from error
    lines = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    if not lines:
        raise SiteUnreachable(
            f"cannot read the host key of {target.host}:{target.port}: "
            f"{proc.stderr.strip() or 'no answer'}"
        )
    return "\n".join(lines) + "\n"
