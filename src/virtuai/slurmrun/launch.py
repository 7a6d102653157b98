"""``srun`` inside a job: a job step's ranks over the allocation's nodes.

Ranks on this node (node 0, where the batch script runs) are started here; the others
through the batch task's hub (``stepnet``) by the step agents of their nodes.  Output
comes back labelled with ``-l``, the step's exit code is the worst of its ranks'.
Standard library only: shipped with the job's runner.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from virtuai.slurmrun import hostlists, mpi, stepnet
else:

    def _shipped(name: str) -> Any:
        """The job's copy (registered by the bundle's loader, or a file beside the shims),
        else the package's own (tests, tools); ``None`` if neither: a one-node job's bundle
        leaves ``stepnet`` out, having no use for it."""
        for module in (f"virtuai_{name}", f"virtuai.slurmrun.{name}"):
            try:
                return importlib.import_module(module)
            except ImportError:
                continue
        return None

    hostlists = _shipped("hostlists")
    stepnet = _shipped("stepnet")
    mpi = _shipped("mpi")

expand_hostlist, compress_hostlist = hostlists.expand_hostlist, hostlists.compress_hostlist
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


_SRUN_WITH_VALUE = {
    "-n": "ntasks",
    "--ntasks": "ntasks",
    "-N": "nodes",
    "--nodes": "nodes",
    "--ntasks-per-node": "ntasks-per-node",
    "-c": "cpus-per-task",
    "--cpus-per-task": "",
    "--mpi": "mpi",
    "-J": "",
    "--job-name": "",
    "--export": "export",
    "-o": "output",
    "--output": "output",
    "-e": "error",
    "--error": "error",
    "--cpu-bind": "",
    "--cpu_bind": "",
    "--gpus": "",
    "-G": "",
    "--gpus-per-task": "",
    "--gpus-per-node": "",
    "--gres": "",
    "--mem": "",
    "--mem-per-cpu": "",
    "--mem-per-gpu": "",
    "-t": "",
    "--time": "",
    "--distribution": "",
    "-m": "",
    "--kill-on-bad-exit": "kill",
    "-K": "kill",
    "--hint": "",
    "--gpu-bind": "",
    "--mem-bind": "",
    "-w": "nodelist",
    "--nodelist": "nodelist",
    "-r": "relative",
    "--relative": "relative",
    "--het-group": "",
    "--network": "",
    "-p": "",
    "--partition": "",
    "-A": "",
    "--account": "",
    "--cpus-per-gpu": "",
    "--ntasks-per-gpu": "",
    "--signal": "",
    "--comment": "",
    "--propagate": "",
    "--wait": "",
    "-W": "",
    "-C": "",
    "--constraint": "",
}
_SRUN_FLAGS = {
    "-l": "label",
    "--label": "label",
    "-u": "",
    "--unbuffered": "",
    "--exclusive": "",
    "--overlap": "",
    "--exact": "",
    "-Q": "",
    "--quiet": "",
    "-v": "",
    "--verbose": "",
    "--whole": "",
    "-X": "",
    "--disable-status": "",
    "--overcommit": "",
    "-O": "",
    "--kill-on-bad-exit": "kill",
    "-K": "kill",
    "--oversubscribe": "",
    "-s": "",
    "--pty": "",
}


def _srun_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return options, list(argv[i + 1 :])
        if not word.startswith("-") or word == "-":
            return options, list(argv[i:])
        name, eq, value = word.partition("=")
        if word.startswith("-") and not word.startswith("--") and len(word) > 2:
            name, value, eq = word[:2], word[2:], "="
        if name in _SRUN_FLAGS and not eq:
            key = _SRUN_FLAGS[name]
        elif name in _SRUN_WITH_VALUE:
            key = _SRUN_WITH_VALUE[name]
            if not eq:
                i += 1
                if i >= len(argv):
                    raise SystemExit(f"srun: error: {name} needs a value")
                value = argv[i]
        elif name.startswith("--"):
            key = ""  # a tuning option this launcher has no use for
            print(f"srun: ignoring {word} (no effect in virtuai)", file=sys.stderr)
        else:
            raise SystemExit(f"srun: error: unknown option {word}")
        if key:
            options[key] = value if value or eq else "1"
        i += 1
    return options, []


def srun(argv: Sequence[str]) -> int:
    """Launch a job step: ``ntasks`` copies of the command over the allocation's nodes.

    Ranks on this node (node 0, the batch task's) run here; the others' through the hub
    (``stepnet``) on their nodes' step agents.  Block distribution, as Slurm's default.
    """
    options, command = _srun_options(argv)
    if options.get("mpi") == "list":
        print("MPI plugin types are...\n" + "\n".join(f"\t{t}" for t in mpi.MPI_TYPES))
        return 0
    if not command:
        print("srun: fatal: no command to run", file=sys.stderr)
        return 1
    env = dict(os.environ)
    hosts = expand_hostlist(env.get("SLURM_JOB_NODELIST", socket.gethostname()))
    try:
        step_nodes = _step_nodes(options, hosts)
    except ValueError as error:
        print(f"srun: error: {error}", file=sys.stderr)
        return 1
    nodes = len(step_nodes)
    if "ntasks" in options:
        ntasks = int(options["ntasks"])
    elif "ntasks-per-node" in options:
        ntasks = nodes * int(options["ntasks-per-node"])
    elif "nodes" in options or "nodelist" in options:
        ntasks = nodes
    else:
        ntasks = int(env.get("SLURM_NTASKS", "1"))
    if ntasks < 1:
        print(f"srun: error: invalid number of tasks: {ntasks}", file=sys.stderr)
        return 1
    # As Slurm: fewer tasks than nodes use only as many nodes.
    step_nodes = step_nodes[:ntasks]
    nodes = len(step_nodes)
    step = _next_step_id(env)
    step_hosts = [hosts[n] for n in step_nodes]
    per_node = -(-ntasks // nodes)
    label = "label" in options
    remote: dict[int, list[dict[str, Any]]] = {}
    local: list[tuple[int, dict[str, str]]] = []
    for rank in range(ntasks):
        node = rank // per_node
        on_node = min(per_node, ntasks - node * per_node)
        task_env = dict(env)
        task_env.update(
            {
                "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": str(rank % per_node),
                "SLURM_NODEID": str(step_nodes[node]),
                "SLURMD_NODENAME": step_hosts[node],
                "SLURM_STEP_ID": str(step),
                "SLURM_STEPID": str(step),
                "SLURM_STEP_NUM_TASKS": str(ntasks),
                "SLURM_STEP_NUM_NODES": str(nodes),
                "SLURM_STEP_NODELIST": compress_hostlist(step_hosts),
                "SLURM_STEP_TASKS_PER_NODE": str(per_node),
                "SLURM_NTASKS": str(ntasks),
                "SLURM_NPROCS": str(ntasks),
                "PMI_RANK": str(rank),
                "PMI_SIZE": str(ntasks),
                # What torch.distributed's env:// and most launchers read.
                "RANK": str(rank),
                "WORLD_SIZE": str(ntasks),
                "LOCAL_RANK": str(rank % per_node),
                "LOCAL_WORLD_SIZE": str(on_node),
            }
        )
        if step_nodes[node] == 0:
            task_env.update(_bound_gpus(env, rank % per_node))
            local.append((rank, task_env))
        else:
            remote.setdefault(step_nodes[node], []).append({"rank": rank, "env": task_env})
    try:
        mpi_type = mpi.wanted(options.get("mpi"), env)
    except mpi.MpiError as error:
        print(f"srun: error: {error}", file=sys.stderr)
        return 1
    if remote and not env.get("VIRTUAI_SLURM_HUB"):
        print(
            "srun: error: only the batch script's srun reaches the other nodes of the "
            "allocation (use -N 1 -r 0, or srun from the batch script)",
            file=sys.stderr,
        )
        return 1
    kill = options.get("kill", "0") != "0"
    hub = env.get("VIRTUAI_SLURM_HUB", "")
    if mpi_type != "none":
        counts = [(n, min(per_node, ntasks - i * per_node)) for i, n in enumerate(step_nodes)]
        return _mpi_step(step, mpi_type, command, counts, ntasks, env, label)
    return _run_step(step, command, local, remote, hub, label=label, kill_on_bad_exit=kill)


def _mpi_step(
    step: int,
    mpi_type: str,
    command: list[str],
    counts: list[tuple[int, int]],
    ntasks: int,
    env: dict[str, str],
    label: bool,
) -> int:
    """The step as Open MPI's mpirun, with this runner as its remote-launch agent
    (``slurmrun/mpi.py`` says why and how)."""
    try:
        mpirun = mpi.find_mpirun(mpi_type, env)
    except mpi.MpiError as error:
        print(f"srun: error: {error}", file=sys.stderr)
        return 1
    node_tmp = env.get(mpi.NODE_TMP_ENV, "")
    agent = os.path.join(node_tmp, "lib", mpi.AGENT)
    if not os.access(agent, os.X_OK):
        print(f"srun: error: --mpi={mpi_type}: this step has no {agent}", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix=f"mpi-{step}-", dir=node_tmp)
    try:
        hostfile = os.path.join(work, "hostfile")
        with open(hostfile, "w", encoding="utf-8") as handle:
            handle.write(mpi.hostfile_text(counts))
        argv = mpi.mpirun_argv(mpirun, hostfile, agent, ntasks, command, label)
        proc = subprocess.Popen(
            argv,
            env=mpi.mpirun_env(env, work, step),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def forward(signo: int, _frame: object) -> None:
            if proc.poll() is None:
                proc.send_signal(signo)

        for signo in FORWARDED:
            signal.signal(signo, forward)
        pumps = [
            threading.Thread(target=_mpi_pump, args=(stream, sink, label), daemon=True)
            for stream, sink in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))
        ]
        for pump in pumps:
            pump.start()
        code = _exit_code(proc.wait())
        for pump in pumps:
            pump.join()
        return code
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mpi_pump(stream: IO[bytes] | None, sink: TextIO, label: bool) -> None:
    assert stream is not None
    with stream:
        for line in stream:
            shown = mpi.filter_line(line, label)
            if shown is not None:
                sink.buffer.write(shown)
                sink.flush()


def mpi_agent(argv: Sequence[str]) -> int:
    """mpirun's remote-launch agent: ``mpi-agent HOST WORDS...`` runs the words (an orted)
    on the allocation's node HOST names, as a one-rank step of its own."""
    if len(argv) < 2:
        print("mpi-agent: usage: mpi-agent HOST COMMAND...", file=sys.stderr)
        return 2
    env = dict(os.environ)
    try:
        node = mpi.node_of(argv[0])
    except mpi.MpiError as error:
        print(error, file=sys.stderr)
        return 2
    hosts = expand_hostlist(env.get("SLURM_JOB_NODELIST", socket.gethostname()))
    if node >= len(hosts):
        print(f"mpi-agent: the allocation has no node {node}", file=sys.stderr)
        return 2
    orted_env = mpi.agent_env(env, node, hosts[node])
    command = mpi.orted_command(argv[1:])
    step = f"{env.get(mpi.STEP_ENV, '0')}.{node}"
    local = [(0, orted_env)] if node == 0 else []
    remote = {node: [{"rank": 0, "env": orted_env}]} if node else {}
    hub = env.get("VIRTUAI_SLURM_HUB", "")
    return _run_step(step, command, local, remote, hub, label=False, kill_on_bad_exit=False)


def _step_nodes(options: Mapping[str, str], hosts: Sequence[str]) -> list[int]:
    """Indices (in the allocation) of the step's nodes: ``-w`` names them, ``-r`` offsets."""
    if "nodelist" in options:
        wanted = expand_hostlist(options["nodelist"])
        chosen: list[int] = []
        for name in wanted:
            found = [i for i, h in enumerate(hosts) if h == name and i not in chosen]
            if not found:
                raise ValueError(f"node {name} is not in this job's allocation ({','.join(hosts)})")
            chosen.append(found[0])
        return sorted(chosen)
    relative = int(options.get("relative", "0") or 0)
    if not 0 <= relative < len(hosts):
        raise ValueError(f"--relative={relative}: the allocation has {len(hosts)} nodes")
    room = len(hosts) - relative
    count = int(options["nodes"].split("-")[0]) if "nodes" in options else room
    if count > room:
        raise ValueError(f"--nodes={count}: the allocation has {room} nodes from here")
    return list(range(relative, relative + max(1, count)))


def _run_step(
    step: int | str,
    command: list[str],
    local: list[tuple[int, dict[str, str]]],
    remote: Mapping[int, list[dict[str, Any]]],
    hub: str,
    *,
    label: bool,
    kill_on_bad_exit: bool,
) -> int:
    """Run the local ranks, have the hub run the remote ones; the worst exit code.

    ``kill_on_bad_exit`` (``-K``): the first rank to fail kills the others, so that a
    distributed job whose rank died does not wait for it until its time limit."""
    write_lock = threading.Lock()
    pending: dict[tuple[int, int], bytes] = {}  # (rank, fd) -> a line not yet ended

    def on_output(rank: int, fd: int, data: bytes) -> None:
        sink = sys.stdout if fd == 1 else sys.stderr
        with write_lock:
            if not label or rank < 0:
                sink.buffer.write(data)
                sink.flush()
                return
            text = pending.pop((rank, fd), b"") + data
            *lines, rest = text.split(b"\n")
            for line in lines:
                sink.write(f"{rank}: {line.decode(errors='replace')}\n")
            if rest:
                pending[(rank, fd)] = rest
            sink.flush()

    channel = relay = None
    codes: dict[int, int] = {}
    procs: list[tuple[int, subprocess.Popen[bytes]]] = []
    killed = threading.Event()
    first_failure: list[int] = []  # with -K: the code of the rank that ended the step

    def on_exit(rank: int, code: int) -> None:
        if not code or not kill_on_bad_exit or killed.is_set():
            return
        killed.set()
        first_failure.append(code)
        print(f"srun: error: task {rank} failed: terminating the step (-K)", file=sys.stderr)
        for _rank, proc in procs:
            if proc.poll() is None:
                proc.kill()
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.send({"op": "signal", "signo": int(signal.SIGKILL)})

    if remote:
        try:
            channel, relay, codes = stepnet.remote_step(
                hub, step, remote, command, on_output, on_exit
            )
        except OSError as error:
            print(f"srun: error: cannot reach the batch step's hub: {error}", file=sys.stderr)
            return 1
    threads = []
    for rank, task_env in local:
        pipe = subprocess.PIPE if label else None
        proc = subprocess.Popen(command, env=task_env, stdout=pipe, stderr=pipe)
        procs.append((rank, proc))
        if label:
            for fd, stream in ((1, proc.stdout), (2, proc.stderr)):
                thread = threading.Thread(
                    target=_pump, args=(rank, fd, stream, on_output), daemon=True
                )
                thread.start()
                threads.append(thread)

    def forward(signo: int, _frame: object) -> None:
        for _rank, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signo)
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.send({"op": "signal", "signo": signo})

    for signo in FORWARDED:
        signal.signal(signo, forward)
    local_codes: dict[int, int] = {}

    def wait(rank: int, proc: subprocess.Popen[bytes]) -> None:
        # As Slurm reports a rank killed by a signal: 128 + its number.
        local_codes[rank] = _exit_code(proc.wait())
        on_exit(rank, local_codes[rank])

    waiters = [threading.Thread(target=wait, args=item, daemon=True) for item in procs]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    for thread in threads:
        thread.join()
    if relay is not None and channel is not None:
        relay.join()
        channel.close()
    unended = sorted(pending.items())
    pending.clear()
    for (rank, fd), rest in unended:
        on_output(rank, fd, rest + b"\n")
    codes = {**codes, **local_codes}  # the relay has filled the remote ranks' codes
    hosts = {rank: e["SLURMD_NODENAME"] for rank, e in local}
    hosts.update({r["rank"]: r["env"]["SLURMD_NODENAME"] for rs in remote.values() for r in rs})
    for rank, code in sorted(codes.items()):
        if code:  # as Slurm's srun says it
            where = hosts.get(rank, "?")
            print(
                f"srun: error: {where}: task {rank}: Exited with exit code {code}", file=sys.stderr
            )
    return first_failure[0] if first_failure else max(codes.values(), default=0)


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _pump(
    rank: int, fd: int, stream: IO[bytes] | None, on_output: Callable[[int, int, bytes], None]
) -> None:
    assert stream is not None
    with stream:
        while chunk := os.read(stream.fileno(), 65536):
            on_output(rank, fd, chunk)


def _bound_gpus(env: Mapping[str, str], local_rank: int) -> dict[str, str]:
    """With --gpus-per-task=G, local rank i sees its own G GPUs, as Slurm binds them."""
    per_task = env.get("SLURM_GPUS_PER_TASK", "")
    devices = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if not (per_task.isascii() and per_task.isdigit() and int(per_task) > 0):
        return {}
    mine = devices[local_rank * int(per_task) : (local_rank + 1) * int(per_task)]
    if len(mine) < int(per_task):
        return {}  # fewer GPUs than asked: leave them all visible rather than none
    return {"CUDA_VISIBLE_DEVICES": ",".join(mine), "SLURM_STEP_GPUS": ",".join(mine)}


def _next_step_id(env: Mapping[str, str]) -> int:
    """Steps are numbered 0, 1, ... per job, as Slurm does; a counter file in the private dir."""
    path = env.get("VIRTUAI_SLURM_STEPS", "")
    if not path:
        return 0
    try:
        with open(path, "a+", encoding="utf-8") as handle:
            handle.seek(0)
            step = len(handle.read())
            handle.write(".")
        return step
    except OSError:
        return 0
