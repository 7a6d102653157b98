"""The batch step of a job submitted by ``virtuai sbatch``, and its ``srun``/``scontrol``.

Run as ``python3 -c BOOTSTRAP batch CONFIG SCRIPT [ARGS...]`` by the job's task:

- sets the ``SLURM_*`` environment from the task's ``VIRTUAI_*`` one and the
  resolved sizes in ``CONFIG`` (JSON);
- writes the script, itself and two shims (``srun``, ``scontrol``) into a
  private directory whose ``bin`` is put first on ``PATH``;
- opens the ``--output``/``--error`` files as Slurm does (patterns expanded,
  relative to the working directory, truncated or appended, never creating a
  missing directory);
- runs the script once, in its own process group, forwards the signals the
  task receives to it, delivers ``--signal=[B:]SIG@T`` T seconds before the
  time limit (to the batch shell only with ``B:``), and exits with its status.

Standard library only: this file is copied into the task, not imported.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from virtuai.slurmrun import hostlists, launch, stepnet
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
    launch = _shipped("launch")
    stepnet = _shipped("stepnet")

expand_hostlist, compress_hostlist = hostlists.expand_hostlist, hostlists.compress_hostlist
srun = launch.srun

_PATTERN_RE = re.compile(r"%([0-9]*)([%AabJjNnstuxM])")
# The bundle (``virtuai.slurmrun.bundle_source``): the loader, this line, then this file.
BUNDLE_MARKER = "# -- virtuai slurm runner --\n"
FUTURE = "from __future__ import annotations\n"
STEP_KEY_ENV = "VIRTUAI_SLURM_STEP_KEY"
# A Slurm site gave the job its own allocation (``drivers.slurm``: the site's sbatch with the
# script's sizes): this runner is Slurm's batch step, and links the script's output files
# at LOG_PREFIX (``.out``/``.err``), where virtuai reads the job's logs.
NATIVE_ENV = "VIRTUAI_SLURM_NATIVE"
LOG_PREFIX_ENV = "VIRTUAI_SLURM_LOG_PREFIX"
# This node's private step directory (``launch``/``mpi``: mpirun's agent and work files).
NODE_TMP_ENV = "VIRTUAI_SLURM_NODE_TMP"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


# -- the batch step ---------------------------------------------------------------------------


def slurm_environment(config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The batch step's SLURM_* variables, from the config and the task's VIRTUAI_* ones."""
    job_id = env.get("VIRTUAI_JOB_ID", "0")
    hosts = config.get("hosts") or [socket.gethostname().split(".")[0]]
    nodelist = compress_hostlist(hosts)
    nodes = len(hosts)
    per_node = int(config["ntasks_per_node"])
    ntasks = int(config["ntasks"])
    gpus = env.get("CUDA_VISIBLE_DEVICES", "")
    cpus_on_node = int(config["cpus_per_task"]) * per_node
    out = {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": str(config["name"]),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NPROCS": str(ntasks),
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_CPUS_PER_TASK": str(config["cpus_per_task"]),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})" if nodes > 1 else str(per_node),
        "SLURM_CPUS_ON_NODE": str(cpus_on_node),
        "SLURM_JOB_CPUS_PER_NODE": f"{cpus_on_node}(x{nodes})" if nodes > 1 else str(cpus_on_node),
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NODELIST": nodelist,
        "SLURMD_NODENAME": hosts[0],
        "SLURM_TOPOLOGY_ADDR": hosts[0],
        "SLURM_SUBMIT_DIR": str(config["submit_dir"]),
        "SLURM_SUBMIT_HOST": str(config["submit_host"]),
        "SLURM_RESTART_COUNT": env.get("VIRTUAI_RESTART_COUNT", "0"),
        "SLURM_GPUS_ON_NODE": str(len([g for g in gpus.split(",") if g])),
        "SLURM_MEM_PER_NODE": str(int(config["mem_per_node"]) // 2**20),
        "SLURM_CLUSTER_NAME": str(config.get("cluster", "virtuai")),
        "SLURM_JOB_PARTITION": str(config.get("partition") or "local"),
        "SLURM_JOB_ACCOUNT": env.get("VIRTUAI_TENANT", ""),
        "SLURM_JOB_QOS": str(config.get("qos") or "normal"),
        "SLURM_JOB_USER": str(config.get("user", "")),
        "SLURM_SCRIPT_CONTEXT": "prolog_task",
        "ENVIRONMENT": "BATCH",
    }
    if gpus:
        out["SLURM_JOB_GPUS"] = gpus
        out["GPU_DEVICE_ORDINAL"] = gpus
    if config.get("gpus_per_task"):
        out["SLURM_GPUS_PER_TASK"] = str(config["gpus_per_task"])
    out.update(array_environment(config, env))
    return out


def array_environment(config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """``SLURM_ARRAY_*`` of an element of a virtuai array (each element is a job of its own,
    locally and on a Slurm site alike)."""
    if "VIRTUAI_ARRAY_ID" not in env:
        return {}
    array = config.get("array") or []
    out = {
        "SLURM_ARRAY_JOB_ID": env["VIRTUAI_ARRAY_ID"],
        "SLURM_ARRAY_TASK_ID": env.get("VIRTUAI_ARRAY_INDEX", "0"),
    }
    if array:
        steps = {b - a for a, b in itertools.pairwise(array)}
        out["SLURM_ARRAY_TASK_MIN"] = str(min(array))
        out["SLURM_ARRAY_TASK_MAX"] = str(max(array))
        out["SLURM_ARRAY_TASK_COUNT"] = str(len(array))
        out["SLURM_ARRAY_TASK_STEP"] = str(steps.pop() if len(steps) == 1 else 1)
    return out


def expand_pattern(pattern: str, env: Mapping[str, str], task: int = 0) -> str:
    if "\\" in pattern:
        return pattern.replace("\\", "")
    job = env["SLURM_JOB_ID"]
    index = env.get("SLURM_ARRAY_TASK_ID")
    values = {
        "%": "%",
        "A": env.get("SLURM_ARRAY_JOB_ID", job),
        "a": index if index is not None else "4294967294",
        "b": str(int(index) % 10) if index is not None else "0",
        "J": f"{job}.batch",
        "j": job,
        "N": env.get("SLURMD_NODENAME", ""),
        "n": "0",
        "s": "batch",
        "t": str(task),
        "u": env.get("SLURM_JOB_USER", ""),
        "x": env.get("SLURM_JOB_NAME", ""),
        "M": env.get("SLURM_CLUSTER_NAME", ""),
    }

    def field(match: re.Match[str]) -> str:
        value = values[match.group(2)]
        width = match.group(1)
        if width and value.isascii() and value.isdigit():
            return value.zfill(min(int(width), 10))
        return value

    return _PATTERN_RE.sub(field, pattern)


def _open_output(path: str, mode: str) -> IO[bytes]:
    if path == "/dev/null":
        return open(os.devnull, "wb")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OSError(
            f"the directory {parent} of output file {path} does not exist "
            "(Slurm does not create it either)"
        )
    return open(path, "ab" if mode == "append" else "wb")


def _write_shims(workdir: str, runner_source: str) -> str:
    """``bin/srun`` and ``bin/scontrol``, running the runner's modules as files in ``lib``
    (imported, so Python caches their bytecode: a step starts without compiling them)."""
    lib = os.path.join(workdir, "lib")
    os.mkdir(lib, 0o700)
    bundled = globals().get("_BUNDLED") or ()
    for name, text in bundled:
        with open(os.path.join(lib, f"{name}.py"), "w", encoding="utf-8") as handle:
            handle.write(text)
    code = runner_source
    if bundled and BUNDLE_MARKER in runner_source:
        code = FUTURE + runner_source.split(BUNDLE_MARKER, 1)[1]
    with open(os.path.join(lib, "virtuai_runner.py"), "w", encoding="utf-8") as handle:
        handle.write(code)
    bin_dir = os.path.join(workdir, "bin")
    os.mkdir(bin_dir, 0o700)
    python = sys.executable or "python3"
    # mpi-agent: mpirun's remote-launch agent (``mpi.py``), not a command for the script.
    for where, name in ((bin_dir, "srun"), (bin_dir, "scontrol"), (lib, "mpi-agent")):
        start = (
            f"import sys; sys.path.insert(0, {lib!r}); import virtuai_runner; "
            f"sys.exit(virtuai_runner.main([{name!r}, *sys.argv[1:]], ''))"
        )
        path = os.path.join(where, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'#!/bin/sh\nexec "{python}" -c "{start}" "$@"\n')
        os.chmod(path, 0o700)
    return bin_dir


def batch(argv: Sequence[str], runner_source: str) -> int:
    config = json.loads(argv[0])
    env = dict(os.environ)
    # Inside a real Slurm allocation (a Slurm site runs this task through sbatch), Slurm's
    # own SLURM_* and srun are the truth: neither is replaced.  virtuai never exports a
    # user's SLURM_* variables, so their presence means a real allocation.
    real_slurm = "SLURM_JOB_ID" in env and "SLURM_JOB_NODELIST" in env
    if real_slurm and env.pop(NATIVE_ENV, "") == "1":
        return _native(config, argv, env, runner_source)
    if real_slurm and env.get("SLURM_PROCID", "0") != "0":
        return 0  # a Slurm site runs every task of the gang: the batch script runs once
    if real_slurm and "SLURM_STEP_ID" in env:
        # Inside the site's own step: the script's sruns are steps nested in it, which
        # must share its resources (Slurm >= 20.11 would otherwise wait for them).
        env.setdefault("SLURM_OVERLAP", "1")
    tasks = int(env.get("VIRTUAI_NUM_TASKS", "1") or 1)
    if not real_slurm and tasks > 1:
        return _multi_node(config, argv, env, runner_source, tasks)
    if not real_slurm:
        env.update(slurm_environment(config, env))
        # virtuai's own gang variables describe the one batch task, not the job's ranks: a
        # Slurm batch step has none (srun sets them per rank; torchrun sets its own).
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(name, None)
    return batch_step(config, argv, env, runner_source, shims=not real_slurm)


def batch_step(
    config: Mapping[str, Any],
    argv: Sequence[str],
    env: dict[str, str],
    runner_source: str,
    *,
    shims: bool = True,
    log_prefix: str = "",
    own_group: bool = True,
) -> int:
    """Run the script once, with ``env`` (its SLURM_* set), writing Slurm's output files
    (linked at ``log_prefix``.out/.err when given)."""
    script, args = argv[1], list(argv[2:])
    private = tempfile.mkdtemp(prefix=f"virtuai-slurm-{env['SLURM_JOB_ID']}-")
    try:
        script_path = os.path.join(private, "slurm_script")
        with open(script_path, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(script_path, 0o700)
        if shims:
            bin_dir = _write_shims(private, runner_source)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
            env[NODE_TMP_ENV] = private
        env["VIRTUAI_SLURM_CONFIG"] = argv[0]
        env["VIRTUAI_SLURM_STEPS"] = os.path.join(private, "steps")
        if not config["output"]:  # `virtuai srun`: the task's own log is the terminal's
            return _run_batch(config, [script_path, *args], env, None, None, own_group)
        try:
            out = _open_output(expand_pattern(config["output"], env), config["open_mode"])
            same = config["error"] == config["output"]
            err = (
                out
                if same
                else _open_output(expand_pattern(config["error"], env), config["open_mode"])
            )
        except OSError as error:
            print(f"sbatch: error: {error}", file=sys.stderr)
            return 1
        if log_prefix:
            _link_logs(log_prefix, out.name, err.name)
        with out, err:
            return _run_batch(config, [script_path, *args], env, out, err, own_group)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _native(
    config: Mapping[str, Any], argv: Sequence[str], env: dict[str, str], runner_source: str
) -> int:
    """Slurm's own batch step of a job a site runs with the script's sizes: Slurm's SLURM_*,
    srun, scontrol and --signal stay; only what virtuai knows better is added (its array,
    its requeue count: each element and attempt is a Slurm job of its own)."""
    env.update(array_environment(config, env))
    env["SLURM_RESTART_COUNT"] = env.get("VIRTUAI_RESTART_COUNT", "0")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    log_prefix = env.pop(LOG_PREFIX_ENV, "")
    config = {**config, "signal": None}  # --signal went to Slurm, which delivers it itself
    # Same process group as this runner, as the batch shell would be (see _run_batch).
    return batch_step(
        config, argv, env, runner_source, shims=False, log_prefix=log_prefix, own_group=False
    )


def _link_logs(prefix: str, out: str, err: str) -> None:
    """``prefix.out``/``prefix.err`` point at the script's output files (virtuai's logs)."""
    for ext, path in (("out", out), ("err", err)):
        link = f"{prefix}.{ext}"
        with contextlib.suppress(OSError):
            tmp = f"{link}.{os.getpid()}"
            os.symlink(os.path.abspath(path), tmp)
            os.replace(tmp, link)


def _multi_node(
    config: dict[str, Any],
    argv: Sequence[str],
    env: dict[str, str],
    runner_source: str,
    tasks: int,
) -> int:
    """One task per node: task 0 is the hub and runs the script, the others step agents."""
    # The secret the tasks prove to each other: the job's own step key (made by sbatch,
    # the same in every task wherever it runs), else the job token (the same in every
    # task only when all machines share one job-token key).
    token = env.pop(STEP_KEY_ENV, "") or env.get("VIRTUAI_JOB_TOKEN", "")
    if stepnet is None:
        print("sbatch: error: this runner was shipped for a one-node job", file=sys.stderr)
        return 1
    if not token:
        print(
            f"sbatch: error: a multi-node job needs {STEP_KEY_ENV} or its job token "
            "(VIRTUAI_JOB_TOKEN) for its nodes to trust each other; it has neither",
            file=sys.stderr,
        )
        return 1
    index = int(env.get("VIRTUAI_TASK_INDEX", "0") or 0)
    address, port = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "0") or 0)
    host = socket.gethostname().split(".")[0]
    timeout = float(config.get("join_timeout_s") or stepnet.JOIN_TIMEOUT_S)
    if index > 0:
        private = tempfile.mkdtemp(prefix=f"virtuai-slurm-{env.get('VIRTUAI_JOB_ID', '0')}-")
        try:
            bin_dir = _write_shims(private, runner_source)
            try:
                channel = stepnet.connect_agent(address, port, token, index, host, timeout)
            except stepnet.ChannelError as error:
                print(f"virtuai step agent: {error}", file=sys.stderr)
                return 1
            agent = stepnet.Agent(channel, {**env, NODE_TMP_ENV: private}, bin_dir)
            for signo in FORWARDED:
                signal.signal(signo, lambda signo, _frame: agent.forward(signo))
            return agent.serve()
        finally:
            shutil.rmtree(private, ignore_errors=True)
    private = tempfile.mkdtemp(prefix=f"virtuai-slurm-{env.get('VIRTUAI_JOB_ID', '0')}-hub-")
    try:
        try:
            hub = stepnet.Hub(token, tasks, address, port, os.path.join(private, "steps.sock"))
            others = hub.join(timeout)
        except (stepnet.ChannelError, OSError) as error:
            print(f"sbatch: error: the allocation's nodes cannot meet: {error}", file=sys.stderr)
            return 1
        config["hosts"] = [host, *others]
        env.update(slurm_environment(config, env))
        env["VIRTUAI_SLURM_HUB"] = hub.socket_path
        env["VIRTUAI_SLURM_MASTER_ADDR"] = address  # as node 0 sees itself
        # The gang's port is the hub's: the script's own rendezvous gets a fresh one.
        env["MASTER_PORT"] = str(stepnet.free_port(address))
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(name, None)
        try:
            return batch_step(config, argv, env, runner_source)
        finally:
            hub.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _run_batch(
    config: Mapping[str, Any],
    command: list[str],
    env: dict[str, str],
    out: IO[bytes] | None,
    err: IO[bytes] | None,
    own_group: bool = True,
) -> int:
    started = time.monotonic()
    child = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        process_group=0 if own_group else None,
    )

    def forward(signo: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            if own_group:
                os.killpg(child.pid, signo)
            elif signo != signal.SIGTERM:
                # Slurm's batch step: a signal to it (scancel -b, --signal=B:) reaches this
                # process only, and is the batch shell's; SIGTERM (scancel, the time limit)
                # reaches every process of the job by itself.
                os.kill(child.pid, signo)

    for signo in FORWARDED:
        signal.signal(signo, forward)
    spec = config.get("signal")
    limit = config.get("time_limit_s")
    if spec and limit:
        delay = max(0.0, limit - spec["seconds"] - (time.monotonic() - started))

        def deliver() -> None:
            with contextlib.suppress(ProcessLookupError):
                if spec["batch_only"]:
                    os.kill(child.pid, spec["number"])
                else:
                    os.killpg(child.pid, spec["number"])

        timer = threading.Timer(delay, deliver)
        timer.daemon = True
        timer.start()
    code = child.wait()
    return code if code >= 0 else 128 - code


# -- scontrol ---------------------------------------------------------------------------------


def scontrol(argv: Sequence[str]) -> int:
    words = list(argv)
    if len(words) >= 2 and words[0] == "show" and words[1] in ("hostnames", "hostname"):
        text = words[2] if len(words) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
        for host in expand_hostlist(text):
            print(host)
        return 0
    if len(words) >= 2 and words[0] == "show" and words[1] == "hostlist":
        print(compress_hostlist(expand_hostlist(",".join(words[2:]))))
        return 0
    if words and words[0] == "requeue":
        return requeue(words[1:])
    print(
        f"scontrol: error: `scontrol {' '.join(words)}` is not supported inside virtuai jobs "
        "(supported: show hostnames, show hostlist, requeue)",
        file=sys.stderr,
    )
    return 1


def requeue(words: Sequence[str]) -> int:
    """``scontrol requeue [JOBID[,JOBID...]]``: the job asks the server, with its job token."""
    url, token = os.environ.get("VIRTUAI_API_URL"), os.environ.get("VIRTUAI_JOB_TOKEN")
    if not url or not token:
        print(
            "scontrol: error: this job has no job token: requeue is not possible here",
            file=sys.stderr,
        )
        return 1
    ids = ",".join(words).split(",") if words else [os.environ.get("SLURM_JOB_ID", "")]
    status = 0
    for ident in [i for i in ids if i]:
        request = urllib.request.Request(
            f"{url}/api/v1/jobs/{urllib.parse.quote(ident, safe='')}/requeue",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read() or b"{}").get("message") or error.reason
            except ValueError:
                message = error.reason
            print(f"scontrol: error: requeue of job {ident}: {message}", file=sys.stderr)
            status = 1
        except (urllib.error.URLError, OSError) as error:
            print(f"scontrol: error: cannot reach the virtuai server: {error}", file=sys.stderr)
            status = 1
    return status


def main(argv: Sequence[str], source: str) -> int:
    if not argv:
        print("usage: runner batch|srun|scontrol ...", file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    if mode == "batch":
        return batch(rest, source)
    if mode == "srun":
        return srun(rest)
    if mode == "scontrol":
        return scontrol(rest)
    if mode == "mpi-agent":
        return launch.mpi_agent(rest)
    print(f"runner: unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Run as a file (the shims), or by the CLI's bootstrap (``python3 -c``), which puts this
    # source, sent compressed in $VIRTUAI_SLURM_RUNNER, in ``_RUNNER_SOURCE``.
    if "__file__" in globals():
        with open(__file__, encoding="utf-8") as _handle:
            _SOURCE = _handle.read()
    else:
        _SOURCE = str(globals().get("_RUNNER_SOURCE", ""))
    sys.exit(main(sys.argv[1:], _SOURCE))
