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
from typing import IO, Any

_PATTERN_RE = re.compile(r"%([0-9]*)([%AabJjNnstuxM])")
_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
_SUFFIX_RE = re.compile(r"^(.*?)([0-9]+)$")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


# -- hostlists (the same rules as virtuai.slurmfront.hostlist, which this file cannot import) --


def expand_hostlist(text: str) -> list[str]:
    hosts: list[str] = []
    depth, current = 0, ""
    for char in text.strip() + ",":
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            if current:
                hosts.extend(_expand_one(current))
            current = ""
        else:
            current += char
    return hosts


def _expand_one(item: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    tails = _expand_one(item[end + 1 :]) if item[end + 1 :] else [""]
    out: list[str] = []
    for part in item[start + 1 : end].split(","):
        match = _RANGE_RE.match(part)
        if not match:
            raise ValueError(f"cannot read hostlist range {part!r}")
        low_text = match.group(1)
        width = len(low_text) if low_text.startswith("0") and len(low_text) > 1 else 0
        for number in range(int(low_text), int(match.group(2) or low_text) + 1):
            out.extend(f"{item[:start]}{number:0{width}d}{tail}" for tail in tails)
    return out


def compress_hostlist(hosts: Sequence[str]) -> str:
    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for host in hosts:
        match = _SUFFIX_RE.match(host)
        if not match or (match.group(2).startswith("0") and len(match.group(2)) > 1):
            order.append("\0" + host)
            continue
        prefix = match.group(1)
        if prefix not in groups:
            groups[prefix] = []
            order.append(prefix)
        groups[prefix].append(int(match.group(2)))
    out = []
    for key in order:
        if key.startswith("\0"):
            out.append(key[1:])
            continue
        numbers = sorted(set(groups[key]))
        if len(numbers) == 1:
            out.append(f"{key}{numbers[0]}")
            continue
        ranges, low, prev = [], numbers[0], numbers[0]
        for number in [*numbers[1:], -1]:
            if number == prev + 1:
                prev = number
                continue
            ranges.append(str(low) if low == prev else f"{low}-{prev}")
            low = prev = number
        out.append(f"{key}[{','.join(ranges)}]")
    return ",".join(out)


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
    if "VIRTUAI_ARRAY_ID" in env:
        array = config.get("array") or []
        out["SLURM_ARRAY_JOB_ID"] = env["VIRTUAI_ARRAY_ID"]
        out["SLURM_ARRAY_TASK_ID"] = env.get("VIRTUAI_ARRAY_INDEX", "0")
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
    runner = os.path.join(workdir, "runner.py")
    with open(runner, "w", encoding="utf-8") as handle:
        handle.write(runner_source)
    bin_dir = os.path.join(workdir, "bin")
    os.mkdir(bin_dir, 0o700)
    python = sys.executable or "python3"
    for name in ("srun", "scontrol"):
        path = os.path.join(bin_dir, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'#!/bin/sh\nexec "{python}" "{runner}" {name} "$@"\n')
        os.chmod(path, 0o700)
    return bin_dir


def batch(argv: Sequence[str], runner_source: str) -> int:
    config = json.loads(argv[0])
    script, args = argv[1], list(argv[2:])
    env = dict(os.environ)
    # Inside a real Slurm allocation (a Slurm site runs this task through sbatch), Slurm's
    # own SLURM_* and srun are the truth: neither is replaced.  virtuai never exports a
    # user's SLURM_* variables, so their presence means a real allocation.
    real_slurm = "SLURM_JOB_ID" in env and "SLURM_JOB_NODELIST" in env
    if not real_slurm:
        env.update(slurm_environment(config, env))
        # virtuai's own gang variables describe the one batch task, not the job's ranks: a
        # Slurm batch step has none (srun sets them per rank; torchrun sets its own).
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            env.pop(name, None)
    private = tempfile.mkdtemp(prefix=f"virtuai-slurm-{env['SLURM_JOB_ID']}-")
    try:
        script_path = os.path.join(private, "slurm_script")
        with open(script_path, "w", encoding="utf-8") as handle:
            handle.write(script)
        os.chmod(script_path, 0o700)
        if not real_slurm:
            bin_dir = _write_shims(private, runner_source)
            env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
        env["VIRTUAI_SLURM_CONFIG"] = argv[0]
        if not config["output"]:  # `virtuai srun`: the task's own log is the terminal's
            return _run_batch(config, [script_path, *args], env, None, None)
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
        with out, err:
            return _run_batch(config, [script_path, *args], env, out, err)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _run_batch(
    config: Mapping[str, Any],
    command: list[str],
    env: dict[str, str],
    out: IO[bytes] | None,
    err: IO[bytes] | None,
) -> int:
    started = time.monotonic()
    child = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, process_group=0
    )

    def forward(signo: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signo)

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


# -- srun -------------------------------------------------------------------------------------

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
    "--kill-on-bad-exit": "",
    "-K": "",
    "--hint": "",
    "--gpu-bind": "",
    "--mem-bind": "",
    "-w": "",
    "--nodelist": "",
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
    "--kill-on-bad-exit": "",
    "-K": "",
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
        elif name == "--kill-on-bad-exit" or name.startswith("--"):
            key = ""  # a tuning option this launcher has no use for
            print(f"srun: ignoring {word} (no effect in virtuai)", file=sys.stderr)
        else:
            raise SystemExit(f"srun: error: unknown option {word}")
        if key:
            options[key] = value if value or eq else "1"
        i += 1
    return options, []


def srun(argv: Sequence[str]) -> int:
    """Launch a job step: ``ntasks`` copies of the command on the allocation (here: this node)."""
    options, command = _srun_options(argv)
    if not command:
        print("srun: fatal: no command to run", file=sys.stderr)
        return 1
    env = dict(os.environ)
    hosts = expand_hostlist(env.get("SLURM_JOB_NODELIST", socket.gethostname()))
    nodes = int(options.get("nodes", "1").split("-")[0]) if "nodes" in options else len(hosts)
    nodes = max(1, min(nodes, len(hosts)))
    if "ntasks" in options:
        ntasks = int(options["ntasks"])
    elif "ntasks-per-node" in options:
        ntasks = nodes * int(options["ntasks-per-node"])
    elif "nodes" in options:
        ntasks = nodes
    else:
        ntasks = int(env.get("SLURM_NTASKS", "1"))
    step = _next_step_id(env)
    step_hosts = hosts[:nodes]
    per_node = -(-ntasks // nodes)
    procs = []
    label = "label" in options
    for rank in range(ntasks):
        node = rank // per_node
        task_env = dict(env)
        task_env.update(
            {
                "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": str(rank % per_node),
                "SLURM_NODEID": str(node),
                "SLURMD_NODENAME": step_hosts[node],
                "SLURM_STEP_ID": str(step),
                "SLURM_STEPID": str(step),
                "SLURM_STEP_NUM_TASKS": str(ntasks),
                "SLURM_STEP_NUM_NODES": str(nodes),
                "SLURM_STEP_NODELIST": compress_hostlist(step_hosts),
                "SLURM_STEP_TASKS_PER_NODE": str(per_node),
                "SLURM_NTASKS": str(ntasks),
                "SLURM_NPROCS": str(ntasks),
                "SLURM_TASK_PID": "",
                "PMI_RANK": str(rank),
                "PMI_SIZE": str(ntasks),
                # What torch.distributed's env:// and most launchers read.
                "RANK": str(rank),
                "WORLD_SIZE": str(ntasks),
                "LOCAL_RANK": str(rank % per_node),
                "LOCAL_WORLD_SIZE": str(per_node),
            }
        )
        task_env.pop("SLURM_TASK_PID")
        task_env.update(_bound_gpus(env, rank % per_node))
        pipe = subprocess.PIPE if label else None
        procs.append(subprocess.Popen(command, env=task_env, stdout=pipe, stderr=pipe))
    threads = []
    if label:
        for rank, proc in enumerate(procs):
            for stream, sink in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
                thread = threading.Thread(target=_label, args=(rank, stream, sink), daemon=True)
                thread.start()
                threads.append(thread)

    def forward(signo: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signo)

    for signo in FORWARDED:
        signal.signal(signo, forward)
    codes = [proc.wait() for proc in procs]
    for thread in threads:
        thread.join()
    worst = max(codes, key=lambda c: (c != 0, abs(c)))
    return worst if worst >= 0 else 128 - worst


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


def _label(rank: int, stream: IO[bytes] | None, sink: IO[str]) -> None:
    assert stream is not None
    for line in iter(stream.readline, b""):
        sink.write(f"{rank}: {line.decode(errors='replace')}")
        sink.flush()


def _next_step_id(env: Mapping[str, str]) -> int:
    """Steps are numbered 0, 1, ... per job, as Slurm does; a counter file in the private dir."""
    runner_dir = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else "."
    path = os.path.join(runner_dir, "steps")
    try:
        with open(path, "a+", encoding="utf-8") as handle:
            handle.seek(0)
            step = len(handle.read())
            handle.write(".")
        return step
    except OSError:
        return 0


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
