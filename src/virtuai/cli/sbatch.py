"""``virtuai sbatch [options] script.sh [args...]``: Slurm batch scripts, run unchanged.

Options are sbatch's own (read by ``virtuai.slurmfront``, not by Typer), plus
``--json`` and ``--ignore-unsupported``.  ``--test-only`` resolves the script
offline and asks the server only whether it would run it; without it, the
job is submitted and ``Submitted batch job N`` printed (``--parsable``: ``N``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from virtuai.cli import output
from virtuai.cli.client import Client, JsonObject, ServerUnreachableError
from virtuai.cli.clock import clock_of
from virtuai.cli.config import load_connection
from virtuai.cli.jobs import JOBS
from virtuai.cli.jobs import _until_finished as until_finished
from virtuai.cli.slurmjob import (
    job_body,
    server_checks,
    server_is_local,
    site_of_partitions,
    submitter,
)
from virtuai.slurmfront.options import OptionError, parse_words
from virtuai.slurmfront.resolve import Context, Resolution, resolve

VIRTUAI_FLAGS = ("--json", "--ignore-unsupported")
SBATCH_CONTEXT = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
    "help_option_names": ["--help"],
}
USAGE_EXIT = 2
MEMORY_NOTE = (
    "note: memory follows Slurm here: a bare number is MiB and 4G is 4 GiB "
    "(virtuai's own 4G, in `virtuai submit`, is 4x10^9 bytes)"
)


def register(app: typer.Typer, panel: str) -> None:
    app.command("sbatch", context_settings=SBATCH_CONTEXT, rich_help_panel=panel)(sbatch)


def sbatch(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None,
        typer.Argument(
            help="sbatch's options, the script and its arguments.",
            metavar="[SBATCH OPTIONS] SCRIPT [ARGS]...",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Submit a Slurm batch script; its #SBATCH directives are read as Slurm 22.05 reads them.

    --test-only prints what would be submitted (--json: as JSON) and submits
    nothing; --ignore-unsupported turns unsupported directives into warnings;
    --vc NAME runs it in that virtual cluster of yours (one task per node);
    --parsable prints just the job id; --wait waits for the job and exits with
    its exit code.  See docs/slurm.md for what is supported and what differs.
    """
    args, vc = _take_vc(list(words or []))
    as_json = "--json" in args[: _options_end(args)]
    ignore = "--ignore-unsupported" in args[: _options_end(args)]
    args = [a for i, a in enumerate(args) if not (i < _options_end(args) and a in VIRTUAI_FLAGS)]
    try:
        _settings, rest = parse_words(args, "command line")
    except OptionError as error:
        output.echo_err(f"sbatch: error: {error.message}")
        raise typer.Exit(USAGE_EXIT) from None
    cli_words = args[: len(args) - len(rest)]
    if any(w in ("-h", "--usage") for w in cli_words):
        typer.echo(ctx.get_help())
        return
    wrapped = any(w == "--wrap" or w.startswith("--wrap=") for w in cli_words)
    script_path = None if wrapped or not rest else rest[0]
    script_args = rest if wrapped else rest[1:]
    script = _read_script(script_path) if not wrapped else ""
    submit_dir = os.getcwd()
    user = submitter()
    name = "sbatch" if script_path in (None, "-") else os.path.basename(script_path)
    res = resolve(script, cli_words, Context(name, submit_dir, user, dict(os.environ)), script_args)
    connection = load_connection()
    local = server_is_local(connection.url)
    if vc is not None and res.partitions:
        output.echo_err("sbatch: error: --vc and -p/--partition: a cluster's jobs run on its nodes")
        raise typer.Exit(USAGE_EXIT)
    if res.partitions and vc is None and not res.test_only:
        with Client.from_environment() as client:
            site_of_partitions(client, res)
    if not local and not res.workdir_given and vc is None:
        res.notes.append(
            "the server is on another machine: the job runs in your tenant's "
            "workspace, not in the submit directory"
        )
    body, notes = job_body(
        res,
        script if not wrapped else _wrapped_script(cli_words),
        env=os.environ,
        submit_dir=submit_dir,
        submit_host=os.uname().nodename,
        user=user,
        local=local,
        vc=vc,
    )
    res.notes.extend(notes)
    if res.test_only:
        _test_only(res, body, as_json, ignore)
        return
    _refuse_problems(res, ignore)
    for note in [MEMORY_NOTE, *res.notes] if _memory_given(res) else res.notes:
        output.echo_err(f"sbatch: {note}" if note.startswith("note:") else f"sbatch: note: {note}")
    with Client.from_environment() as client:
        job = client.post_object(JOBS, body)
        job_id = int(job.get("array_id") or job["id"])
        if as_json:
            output.print_json(job)
        else:
            typer.echo(str(job_id) if res.parsable else f"Submitted batch job {job_id}")
        if res.wait:
            raise typer.Exit(_wait(ctx, client, job, job_id))


def _take_vc(args: list[str]) -> tuple[list[str], str | None]:
    """virtuai's ``--vc NAME`` (run in that virtual cluster), when it comes before the script."""
    for i, word in enumerate(args):
        if word == "--vc" and i + 1 < len(args):
            rest, name = [*args[:i], *args[i + 2 :]], args[i + 1]
        elif word.startswith("--vc="):
            rest, name = [*args[:i], *args[i + 1 :]], word.partition("=")[2]
        else:
            continue
        if i <= _options_end(rest):  # else it is one of the script's own arguments
            return rest, name
        return args, None
    return args, None


def _options_end(args: list[str]) -> int:
    """Index of the script: virtuai's own flags count only before it."""
    try:
        _found, rest = parse_words([a for a in args if a not in VIRTUAI_FLAGS], "command line")
    except OptionError:
        return len(args)
    return len(args) - len(rest)


def _read_script(path: str | None) -> str:
    try:
        # Bytes, not text mode: universal newlines would hide DOS line breaks, which sbatch
        # refuses.
        from_stdin = path is None or path == "-"
        data = sys.stdin.buffer.read() if from_stdin else Path(str(path)).read_bytes()
    except OSError as error:
        output.echo_err(f"sbatch: error: Unable to open file {path}: {error.strerror or error}")
        raise typer.Exit(USAGE_EXIT) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Slurm takes any bytes; the API takes text: say so, and go on with what reads.
        output.echo_err(f"sbatch: warning: {path} is not UTF-8: undecodable bytes are replaced")
        return data.decode("utf-8", errors="replace")


def _wrapped_script(cli_words: list[str]) -> str:
    wrap = ""
    for i, word in enumerate(cli_words):
        if word.startswith("--wrap="):
            wrap = word.partition("=")[2]
        elif word == "--wrap" and i + 1 < len(cli_words):
            wrap = cli_words[i + 1]
    return f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{wrap}\n"


def _memory_given(res: Resolution) -> bool:
    return not res.mem_default


def _refuse_problems(res: Resolution, ignore: bool) -> None:
    fatal = [p for p in res.problems if p.kind == "invalid" or not ignore]
    for problem in res.problems:
        if problem not in fatal:
            output.echo_err(f"sbatch: warning: {problem} (ignored: --ignore-unsupported)")
    for problem in fatal:
        output.echo_err(f"sbatch: error: {problem}")
    if fatal:
        if any(p.kind != "invalid" for p in fatal):
            output.echo_err("sbatch: --ignore-unsupported submits anyway, without them")
        raise typer.Exit(1)


def _test_only(res: Resolution, body: JsonObject, as_json: bool, ignore: bool) -> None:
    would_not_run = [str(p) for p in res.problems if p.kind == "invalid" or not ignore]
    server_note = None
    try:
        with Client.from_environment() as client:
            would_not_run.extend(server_checks(client, res, body))
    except ServerUnreachableError as error:
        server_note = f"not checked against a server: {error.message}"
        res.notes.append(server_note)
    result: dict[str, Any] = res.to_json()
    result["would_not_run"] = would_not_run
    result["server_checked"] = server_note is None
    if as_json:
        output.print_json(result)
    else:
        _print_resolution(result)
    if would_not_run:
        raise typer.Exit(1)


def _print_resolution(r: dict[str, Any]) -> None:
    gpus = f"{r['gpus']}" + (f" ({r['gpu_type']})" if r["gpu_type"] else "")
    time_limit = "unlimited" if r["time_limit_s"] is None else output.duration(r["time_limit_s"])
    output.print_fields(
        [
            ("Job name", r["name"]),
            ("Nodes", str(r["nodes"])),
            ("Tasks", f"{r['ntasks']} ({r['ntasks_per_node']} per node)"),
            ("CPUs per task", str(r["cpus_per_task"])),
            ("Memory per node", output.memory(r["mem_per_node"])),
            ("GPUs", gpus),
            ("Time limit", time_limit),
            ("Array", _array(r)),
            ("Dependencies", _deps(r)),
            ("Output", r["output"]),
            ("Error", r["error"]),
            ("Working dir", r["workdir"]),
            ("Pool", ",".join(r["partitions"]) or output.NONE),
            ("Tenant", r["tenant"] or "(your only one)"),
            ("Priority", r["priority"]),
        ]
    )
    rows = [
        [str(d["line"] or ""), d["origin"], d["text"], d["fate"], d["note"]]
        for d in r["directives"]
    ]
    if rows:
        typer.echo("")
        output.print_table(["LINE", "FROM", "DIRECTIVE", "FATE", "NOTE"], rows)
    for note in r["notes"]:
        typer.echo(f"note: {note}")
    for reason in r["would_not_run"]:
        typer.echo(f"would not run: {reason}")
    if not r["would_not_run"]:
        typer.echo("sbatch: Job would be submitted (test only: nothing was submitted)")


def _array(r: dict[str, Any]) -> str:
    if r["array"] is None:
        return output.NONE
    shown = ",".join(str(i) for i in r["array"][:20]) + ("..." if len(r["array"]) > 20 else "")
    throttle = f" (at most {r['array_max_running']} at once)" if r["array_max_running"] else ""
    return f"{shown}{throttle}"


def _deps(r: dict[str, Any]) -> str:
    terms = [d["type"] + (f":{d['job']}" if "job" in d else "") for d in r["dependencies"]]
    return ("?" if r["dependency_mode"] == "any" else ",").join(terms) or output.NONE


def _wait(ctx: typer.Context, client: Client, job: JsonObject, job_id: int) -> int:
    """Wait for the job (every element of an array); its exit code, the highest for arrays."""
    ids = [int(job["id"])]
    if job.get("array_id") is not None:
        ids = [int(j["id"]) for j in client.get_list(JOBS, {"array_id": job_id})]
    codes = []
    for ident in ids:
        done = until_finished(client, ident, clock_of(ctx), None)
        code = done.get("exit_code")
        codes.append(
            int(code) if code is not None else (0 if done.get("state") == "succeeded" else 1)
        )
    return max(codes)
