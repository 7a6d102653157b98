"""The ``virtuai`` entry point: the common commands in a few milliseconds, the rest by Typer.

Importing the whole CLI (Typer, Click, Rich, httpx and every command module)
costs about 300 ms of CPU per call, 50 times what ``sbatch`` costs.  Scripts
that submit sweeps call ``virtuai submit`` thousands of times, so the commands
used in loops (``submit``, ``jobs --json``, ``job --json``, ``cancel``,
``wait``, ``logs``) are parsed here with the standard library only and sent
over a plain socket (``cli/leanapi.py``).  Only modules built into the
interpreter or loaded at its start are imported on the way (see
``test_the_lean_path_imports_nothing_it_can_do_without``): ``re``, ``json``,
``socket``, ``typing`` and the domain's parsers cost a few ms each, and the
parsers are asked only when ``cli/leancheck.py``'s quick checks are unsure.

The rule that keeps both paths the same: this module handles a call only when
it is sure to do exactly what the Typer app would do.  Anything else (an
option it does not know, a value the domain's parsers refuse, ``--help``, a
table for a terminal, an ``https://`` server) goes to the full app *before
any request is sent*, so the full app prints its own usage errors and output.
Once a request is sent, errors are printed here in the full app's words
(``error: <message>``, exit 1); ``tests/unit/cli/test_cli_lean.py`` runs both
paths on the same calls and compares what they print.
"""

from __future__ import annotations

import os
import sys
import time

from virtuai.cli import leancheck, leanjson
from virtuai.cli.leanapi import Api, Failed, Fallback, expect_list, expect_object

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

__all__ = ["COMMANDS", "FINISHED", "STATES", "Fallback", "main", "run"]

JOBS = "/api/v1/jobs"
ARRAYS = "/api/v1/arrays"
# domain.workload's states, spelled out to spare its imports (a test checks they agree).
FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out", "preempted"})
STATES = frozenset({"pending", "admitted", "starting", "running", "preempting"}) | FINISHED
POLL_S = 0.5
WAIT_MAX_POLL_S = 2.0
JOB_CHECK_EVERY = 10
OUTAGE_GRACE_S = 60.0
TIMEOUT_EXIT = 124
ENV_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
ENV_NAME_CHARS = ENV_NAME_FIRST | frozenset("0123456789")
# What click.echo strips from text written to something that is not a terminal.
ANSI_PATTERN = r"\033\[[0-?]*[ -/]*[@-~]"


def main() -> None:
    """The console script."""
    try:
        code = run(sys.argv[1:])
    except Fallback:
        code = None
    if code is None:
        # Imported here on purpose: the full app is what this module exists to avoid.
        from virtuai.cli.main import main as full_main

        full_main()
        return
    _exit(code)


def _exit(code: int) -> None:
    """Exit at once once the output is out: tearing the interpreter down (modules, garbage
    collection) costs about 2 ms, a tenth of a call, and this path holds nothing to close."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        sys.exit(code)  # a closed pipe: Python's own exit reports it as usual
    os._exit(code)


def run(argv: Sequence[str]) -> int | None:
    """Run a common command and return its exit status; raise ``Fallback`` for the rest."""
    if not argv:
        raise Fallback
    command, args = argv[0], list(argv[1:])
    handler = COMMANDS.get(command)
    if handler is None or "--help" in args[:1]:
        raise Fallback
    try:
        return handler(args)
    except Failed as failure:
        _echo_err(_error_line(failure.message, failure.field))
        return 1


# Arguments, as Click parses them -------------------------------------------------------


class Options:
    """Options before the first positional word, Click's way: ``--x v``, ``--x=v``, ``-x v``,
    ``-xv``, flags, repeatable options; an unknown one falls back."""

    def __init__(
        self,
        valued: Mapping[str, str],
        flags: Mapping[str, tuple[str, object]],
        repeatable: frozenset[str] = frozenset(),
    ) -> None:
        self.valued = valued  # spelling -> key
        self.flags = flags  # spelling -> (key, value)
        self.repeatable = repeatable

    def parse(self, args: list[str], *, interspersed: bool) -> tuple[dict[str, Any], list[str]]:
        values: dict[str, Any] = {}
        positional: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                positional += args[i:]
                break
            if not arg.startswith("-") or arg == "-":
                positional.append(arg)
                if not interspersed:
                    positional += args[i:]
                    break
                continue
            name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if not arg.startswith("--") and len(arg) > 2:
                name, eq, attached = arg[:2], "=", arg[2:]
            if name in self.flags and not eq:
                key, value = self.flags[name]
                values[key] = value
                continue
            if name not in self.valued:
                raise Fallback
            if eq:
                value_text = attached
            elif i < len(args):
                value_text = args[i]
                i += 1
            else:
                raise Fallback
            key = self.valued[name]
            if key in self.repeatable:
                values.setdefault(key, []).append(value_text)
            else:
                values[key] = value_text
        return values, positional


# The domain's parser of each checked value.  A module is imported only when the quick
# check of ``cli/leancheck.py`` is unsure: each costs a few ms, more than the rest of a call.
_PARSERS = {
    "name": ("virtuai.domain.tenancy", "validate_name"),
    "cpu": ("virtuai.domain.units", "parse_cpu"),
    "memory": ("virtuai.domain.units", "parse_memory"),
    "duration": ("virtuai.domain.units", "parse_duration"),
    "signal": ("virtuai.domain.units", "parse_signal_spec"),
    "array": ("virtuai.domain.arrays", "parse_array"),
    "dependency": ("virtuai.domain.dependencies", "parse_dependencies"),
}
_QUICK: dict[str, Callable[[str], bool]] = {
    "name": leancheck.name,
    "cpu": leancheck.cpu,
    "memory": leancheck.memory,
    "duration": leancheck.duration,
    "array": leancheck.array,
    "dependency": leancheck.dependency,
}


def _checked(value: str | None, kind: str) -> str | None:
    """``value`` if the domain's parser of ``kind`` takes it; else Fallback (the full app
    words the usage error)."""
    if value is None:
        return None
    quick = _QUICK.get(kind)
    if quick is not None and quick(value):
        return value
    module, function = _PARSERS[kind]
    parse: Callable[[str], object] = getattr(__import__(module, fromlist=[function]), function)
    from virtuai.errors import VirtuaiError

    try:
        parse(value)
    except VirtuaiError:
        raise Fallback from None
    return value


def _whole(value: str | None, minimum: int) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:
        raise Fallback
    return int(value)


def _job_id(args: list[str]) -> int:
    if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()):
        raise Fallback  # array elements (12_3) and mistakes: the full app
    return int(args[0])


# submit ------------------------------------------------------------------------------------

SUBMIT_OPTIONS = Options(
    valued={
        "--tenant": "tenant",
        "--name": "name",
        "--cpu": "cpu",
        "--memory": "memory",
        "--gpu": "gpu",
        "--tasks": "tasks",
        "--time": "time",
        "-t": "time",
        "--priority": "priority",
        "--env": "env",
        "--workdir": "workdir",
        "--array": "array",
        "-a": "array",
        "--dependency": "dependency",
        "-d": "dependency",
        "--signal": "signal",
        "--vc": "vc",
    },
    flags={
        "--json": ("json", True),
        "--requeue": ("requeue", True),
        "--no-requeue": ("requeue", False),
    },
    repeatable=frozenset({"env"}),
)


def submit(args: list[str]) -> int:
    values, command = SUBMIT_OPTIONS.parse(args, interspersed=False)
    if not command:
        raise Fallback
    for key in ("tenant", "name", "vc"):
        _checked(values.get(key), "name")
    cpu, memory = values.get("cpu"), values.get("memory")
    gpu = _whole(values.get("gpu"), 0) or 0
    tasks = _whole(values.get("tasks"), 1)
    vc = values.get("vc")
    whole_nodes = vc is not None and cpu is None and memory is None and gpu == 0
    env: dict[str, str] = {}
    for item in values.get("env", []):
        key, sep, value = item.partition("=")
        if not sep or not _env_name(key):
            raise Fallback
        env[key] = value
    workdir = values.get("workdir")
    spec: dict[str, Any] = {
        "type": "job",
        "tenant": values.get("tenant"),
        "name": values.get("name"),
        "command": command,
        "resources": None
        if whole_nodes
        else {
            "cpu": _checked(cpu or "1", "cpu"),
            "memory": _checked(memory or "1Gi", "memory"),
            "gpu": gpu,
        },
        "tasks": tasks if tasks is not None or vc is not None else 1,
        "vc": vc,
        "time": _checked(values.get("time", "1h"), "duration"),
        "priority": values.get("priority", "normal"),
        "env": env,
        "workdir": None if workdir is None else os.path.abspath(workdir),
        "array": _checked(values.get("array"), "array"),
        "dependency": _checked(values.get("dependency"), "dependency"),
        "signal": _checked(values.get("signal"), "signal"),
        "requeue": values.get("requeue", True),
    }
    body = {key: value for key, value in spec.items() if value is not None}
    job = expect_object(Api.from_environment().call("POST", JOBS, body=body), JOBS)
    if values.get("json"):
        _print_json(job)
    else:
        _echo(str(job.get("id", "")))
    return 0


# jobs, job, cancel ------------------------------------------------------------------------


def list_jobs(args: list[str]) -> int:
    values, positional = Options(
        {"--tenant": "tenant", "--state": "state", "--limit": "limit"}, {"--json": ("json", True)}
    ).parse(args, interspersed=True)
    state = values.get("state")
    if positional or not values.get("json") or (state is not None and state not in STATES):
        raise Fallback  # tables are Rich's: the full app draws them
    limit = _whole(values.get("limit"), 1)
    params = {"tenant": values.get("tenant"), "state": state, "limit": limit}
    _print_json(expect_list(Api.from_environment().call("GET", JOBS, params=params), JOBS))
    return 0


def show_job(args: list[str]) -> int:
    values, positional = Options({}, {"--json": ("json", True)}).parse(args, interspersed=True)
    if not values.get("json"):
        raise Fallback
    job_id = _job_id(positional)
    path = f"{JOBS}/{job_id}"
    _print_json(expect_object(Api.from_environment().call("GET", path), path))
    return 0


def cancel(args: list[str]) -> int:
    values, positional = Options({}, {"--json": ("json", True)}).parse(args, interspersed=True)
    job_id = _job_id(positional)
    api = Api.from_environment()
    path = f"{JOBS}/{job_id}"
    found = expect_object(api.call("GET", path), path)
    if found.get("array_id") is not None and found.get("array_id") == found.get("id"):
        path = f"{ARRAYS}/{job_id}/cancel"
        elements = expect_list(api.call("POST", path), path)
        if values.get("json"):
            _print_json(elements)
        else:
            _echo(f"array {job_id}: cancel requested for {len(elements)} element(s)")
        return 0
    path = f"{JOBS}/{job_id}/cancel"
    job = expect_object(api.call("POST", path), path)
    if values.get("json"):
        _print_json(job)
    elif job.get("state") in FINISHED:
        _echo(f"job {job_id} {_ended(job)}")
    else:
        _echo(f"job {job_id}: cancel requested (state: {job.get('state')})")
    return 0


def _env_name(key: str) -> bool:
    """``validate.ENV_NAME_RE``'s names (letters, digits and _, not first a digit)."""
    return bool(key) and key[0] in ENV_NAME_FIRST and all(c in ENV_NAME_CHARS for c in key)


def _ended(job: Mapping[str, Any]) -> str:
    text = str(job.get("state"))
    if job.get("exit_code") is not None:
        text += f" with exit code {job['exit_code']}"
    if job.get("reason"):
        text += f": {job['reason']}"
    return text


# wait, logs -----------------------------------------------------------------------------------


def wait(args: list[str]) -> int:
    values, positional = Options({"--timeout": "timeout"}, {}).parse(args, interspersed=True)
    job_id = _job_id(positional)
    timeout = _seconds(values.get("timeout"))
    api = Api.from_environment()
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = POLL_S
    job: dict[str, Any] | None = None
    outage_since: float | None = None
    path = f"{JOBS}/{job_id}"
    while True:
        try:
            job = expect_object(api.call("GET", path), path)
            outage_since = None
            if job.get("state") in FINISHED:
                break
        except Failed as failure:
            now = time.monotonic()
            if not failure.unreachable or job is None:
                raise
            if outage_since is not None and now - outage_since > OUTAGE_GRACE_S:
                raise
            if outage_since is None:
                _echo_err("warning: the server is not answering; still waiting")
                outage_since = now
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            state = job.get("state") if job else "unknown"
            assert timeout is not None
            _echo_err(
                f"error: gave up after {timeout:g} s waiting for job {job_id} (state: {state})"
            )
            return TIMEOUT_EXIT
        time.sleep(interval if deadline is None else min(interval, deadline - now))
        interval = min(interval * 2, WAIT_MAX_POLL_S)
    if job.get("state") != "succeeded":
        _echo_err(f"job {job_id} {_ended(job)}")
        return 1
    return 0


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    whole, dot, fraction = value.partition(".")
    if not leancheck.digits(whole, 30) or (dot and not leancheck.digits(fraction, 30)):
        raise Fallback  # Click's float parsing and its errors: the full app
    return float(value)


def logs(args: list[str]) -> int:
    values, positional = Options(
        {"--task": "task"}, {"--follow": ("follow", True), "-f": ("follow", True)}
    ).parse(args, interspersed=True)
    job_id = _job_id(positional)
    task = _whole(values.get("task"), 0) or 0
    follow = bool(values.get("follow"))
    api = Api.from_environment()
    offsets = {"stdout": 0, "stderr": 0}
    ended: set[str] = set()
    idle_polls = 0
    job_finished = False
    path = f"{JOBS}/{job_id}/logs"
    while True:
        printed = False
        for stream in [s for s in offsets if s not in ended]:
            params = {"task": task, "stream": stream, "offset": offsets[stream]}
            chunk = expect_object(api.call("GET", path, params=params), path)
            data = str(chunk.get("data") or "")
            if data:
                _write(data, err=stream == "stderr")
                printed = True
            offsets[stream] = int(chunk.get("offset", offsets[stream] + len(data)))
            if chunk.get("eof"):
                ended.add(stream)
        if len(ended) == len(offsets) or (not printed and (not follow or job_finished)):
            return 0
        if printed:
            continue
        idle_polls += 1
        if idle_polls % JOB_CHECK_EVERY == 0:
            job_path = f"{JOBS}/{job_id}"
            job = expect_object(api.call("GET", job_path), job_path)
            job_finished = job.get("state") in FINISHED
        time.sleep(POLL_S)


def up(args: list[str]) -> int:
    """``virtuai up``: exec the server at once, as ``cli/up.py`` does after Typer's parsing
    (a restart then costs the server's start-up, not the CLI's too)."""
    values, positional = Options(
        {"--host": "host", "--port": "port", "--database-url": "database_url", "--home": "home"},
        {},
    ).parse(args, interspersed=True)
    port = values.get("port")
    if positional or (port is not None and (_whole(port, 0) or 0) > 65535):
        raise Fallback
    argv = [sys.executable, "-m", "virtuai.server"]
    for flag, key in (
        ("--host", "host"),
        ("--port", "port"),
        ("--database-url", "database_url"),
        ("--home", "home"),
    ):
        value = values.get(key)
        if value is not None:
            argv += [
                flag,
                _path_text(value) if key == "home" else str(int(value) if key == "port" else value),
            ]
    os.execv(sys.executable, argv)


def _path_text(value: str) -> str:
    from pathlib import Path

    return str(Path(value))


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "up": up,
    "submit": submit,
    "jobs": list_jobs,
    "job": show_job,
    "cancel": cancel,
    "wait": wait,
    "logs": logs,
}


# Printing, as click.echo does it ---------------------------------------------------------------


def _error_line(message: str, field: str | None) -> str:
    text = " ".join(str(message).split()) or "error"
    named = not field or text.startswith(f"{field}:")
    return f"error: {text}" + ("" if named else f" (field: {field})")


def _print_json(data: Any) -> None:
    _echo(leanjson.dumps(data, indent=2))


def _echo(text: str) -> None:
    _write(text + "\n")


def _echo_err(text: str) -> None:
    _write(text + "\n", err=True)


def _write(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    if "\033" in text and not stream.isatty():
        import re

        text = re.sub(ANSI_PATTERN, "", text)
    stream.write(text)
    stream.flush()
