"""From a Slurm ``Resolution`` to virtuai: the job to submit, and what this server would refuse.

The job's command is the in-task runner (``virtuai.slurmrun.runner``, sent
as source in ``$VIRTUAI_SLURM_RUNNER``), which runs the script once as the
batch step with the ``SLURM_*`` environment, ``srun`` and ``scontrol``.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import secrets
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from virtuai.cli.client import ApiError, Client, JsonObject
from virtuai.slurmfront.resolve import UNLIMITED_CAP_S, Resolution, virtuai_dependency
from virtuai.slurmrun import bundle_source
from virtuai.slurmrun.command import RUNNER_ENV, STEP_KEY_ENV, batch_command

MAX_ENV_ENTRIES = 200  # the API takes 256; room for the runner's own
MAX_ENV_VALUE = 32 * 1024
# Not sent with --export=ALL: they describe the submitting session, or hold virtuai's secrets.
NOT_EXPORTED = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "MAIL",
        "SHELL",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "DISPLAY",
        "XAUTHORITY",
        "XDG_RUNTIME_DIR",
        "XDG_SESSION_ID",
        "DBUS_SESSION_BUS_ADDRESS",
        "TMUX",
        "TERM_SESSION_ID",
        "SSH_AUTH_SOCK",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
    }
)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def submitter() -> str:
    """The submitting user's name (``getpass`` would import termios for nothing)."""
    return os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name


def runner_source(*, multi_node: bool = True) -> str:
    """The in-task runner and its modules, as one source text (``virtuai.slurmrun``)."""
    return bundle_source(multi_node=multi_node)


def server_is_local(url: str) -> bool:
    """The server runs on this machine, so it can reach the submit directory."""
    host = urlsplit(url).hostname or ""
    return host in LOCAL_HOSTS or host.startswith("127.")


def exported_env(res: Resolution, env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables ``--export`` sends, and the names left out (with why, for a note)."""
    chosen: dict[str, str] = {}
    if res.export.all:
        chosen.update(env)
    for name in res.export.names:
        if name in env:
            chosen[name] = env[name]
    chosen.update(dict(res.export.values))
    left_out: list[str] = []
    out: dict[str, str] = {}
    for name, value in sorted(chosen.items()):
        if (
            name in NOT_EXPORTED
            or name.startswith(("VIRTUAI_", "SLURM_", "BASH_FUNC_"))
            or not _ENV_NAME_RE.match(name)
        ):
            continue
        if len(value.encode()) > MAX_ENV_VALUE or len(out) >= MAX_ENV_ENTRIES or "\0" in value:
            left_out.append(name)
            continue
        out[name] = value
    return out, left_out


def array_text(res: Resolution) -> str | None:
    if res.array is None:
        return None
    ranges: list[str] = []
    indices = res.array
    start = prev = indices[0]
    for index in [*indices[1:], None]:
        if index is not None and index == prev + 1:
            prev = index
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if index is not None:
            start = prev = index
    throttle = f"%{res.array_max_running}" if res.array_max_running else ""
    return ",".join(ranges) + throttle


def runner_config(res: Resolution, submit_host: str, user: str) -> dict[str, Any]:
    return {
        "name": res.name,
        "ntasks": res.ntasks,
        "ntasks_per_node": res.ntasks_per_node,
        "cpus_per_task": res.cpus_per_task,
        "gpus_per_task": res.gpus_per_task,
        "mem_per_node": res.mem_per_node,
        # For a Slurm site's own sbatch (``drivers.slurm``); the runner does not read them.
        "nodes": res.nodes,
        "gpus_per_node": res.gpus_per_node,
        "gpu_type": res.gpu_type,
        "submit_dir": res.workdir if res.workdir_given else "",
        "submit_host": submit_host,
        "user": user,
        "output": res.output_pattern,
        "error": res.error_pattern,
        "open_mode": res.open_mode,
        "time_limit_s": res.time_limit_s or UNLIMITED_CAP_S,
        "signal": None
        if res.signal is None
        else {
            "number": res.signal.number,
            "seconds": res.signal.seconds,
            "batch_only": res.signal.batch_only,
        },
        "array": res.array,
        "partition": res.partitions[0] if res.partitions else None,
        "qos": res.qos,
    }


def job_body(
    res: Resolution,
    script: str,
    *,
    env: Mapping[str, str],
    submit_dir: str,
    submit_host: str,
    user: str,
    local: bool,
    vc: str | None = None,
) -> tuple[JsonObject, list[str]]:
    """The ``JobCreate`` body for the batch step, and notes on what virtuai did differently.

    ``vc``: run in that virtual cluster of the tenant, one task per cluster node."""
    notes: list[str] = []
    variables, left_out = exported_env(res, env)
    if left_out:
        notes.append(f"--export: not sent (too many or too large): {', '.join(left_out)}")
    config = runner_config(res, submit_host, user)
    config["submit_dir"] = submit_dir
    source = runner_source(multi_node=res.nodes > 1)
    variables[RUNNER_ENV] = base64.b64encode(zlib.compress(source.encode(), 9)).decode()
    if res.nodes > 1:
        # What the job's tasks prove to each other (``slurmrun.stepnet``): one random key per
        # job, in its environment (never shown by the API), the same on every machine.
        variables[STEP_KEY_ENV] = secrets.token_hex(32)
    # A site's pools are "<site>:<partition>": such a job runs on the site's machines, where
    # the submit directory is not (or is not the tenant's), so it runs in the site's workspace.
    site = res.site or next((p.partition(":")[0] for p in res.partitions if ":" in p), None)
    here = local and vc is None and site is None
    workdir = res.workdir if (here or res.workdir_given) else None
    if vc is not None and workdir is None:
        notes.append(f"in virtual cluster {vc}: the job runs in its shared /shared directory")
    elif site is not None and workdir is None:
        notes.append(
            f"on site {site}: the job runs in your tenant's workspace there, not in the "
            "submit directory (-D names another)"
        )
    elif workdir is None:
        notes.append(
            "the server is on another machine: the job runs in your tenant's workspace, "
            "not in the submit directory"
        )
    body: JsonObject = {
        "type": "job",
        "tenant": res.tenant,
        "name": res.api_name,
        "command": batch_command(config, script, res.script_args),
        "resources": {
            "cpu": res.cpus_per_node,
            "memory": res.mem_per_node,
            "gpu": res.gpus_per_node,
        },
        # One task per node: task 0 runs the script, the others srun's step agents.
        "tasks": res.nodes,
        "time": res.time_limit_s or UNLIMITED_CAP_S,
        "priority": res.priority,
        "env": variables,
        "workdir": workdir,
        "array": array_text(res),
        "dependency": virtuai_dependency(res),
        "signal": None if res.signal is None else f"{res.signal.number}@{res.signal.seconds}",
        "requeue": res.requeue,
    }
    if res.constraints:
        body["constraints"] = list(res.constraints)
    if vc is not None:
        body["vc"] = vc
    elif site is not None:
        body["site"] = site  # -p names a site or one of its pools: the job goes there
    return {k: value for k, value in body.items() if value is not None}, notes


def site_of_partitions(client: Client, res: Resolution) -> None:
    """``-p NAME`` may name a site ("hpc") rather than a pool: only the server knows its
    sites, so ask it once (a pool of a site, "hpc:gpu", says so by itself)."""
    if res.site is not None or len(res.partitions) != 1 or ":" in res.partitions[0]:
        return
    nodes = client.get_list("/api/v1/nodes")
    sites = {str(n.get("site")) for n in nodes if n.get("site")}
    pools = {str(n.get("pool")) for n in nodes}
    if res.partitions[0] in sites - pools:
        res.site = res.partitions[0]


def server_checks(client: Client, res: Resolution, body: JsonObject) -> list[str]:
    """Why this server would not run the job (empty: it would); raises if unreachable."""
    problems: list[str] = []
    nodes = client.get_list("/api/v1/nodes")
    sites = {str(n.get("site")) for n in nodes}
    pools = {str(n.get("pool")) for n in nodes} | sites
    if len(res.partitions) == 1 and res.partitions[0] in sites - {
        str(n.get("pool")) for n in nodes
    }:
        res.site = res.partitions[0]
    candidates = nodes
    for partition in res.partitions:
        if partition not in pools:
            problems.append(
                f"partition {partition!r} is no pool or site here (there are: "
                f"{', '.join(sorted(pools)) or 'none'})"
            )
    if res.partitions:
        candidates = [
            n for n in nodes if n.get("pool") in res.partitions or n.get("site") in res.partitions
        ]
    if res.mem_whole_node and candidates:
        body["resources"]["memory"] = max(int(n["capacity"]["memory"]) for n in candidates)
    elif res.mem_whole_node:
        problems.append("--mem=0 (all of a node's memory): no node to take it from")
    if not problems:
        try:
            plan = client.post_object("/api/v1/jobs/plan", body)
        except ApiError as error:
            if error.status is None:
                raise
            problems.append(error.message)
        else:
            if not plan.get("can_ever_run"):
                problems.append(str(plan.get("reason") or "this installation can never run it"))
    return problems
