"""``virtuai srun [options] command...`` outside a job: a one-off job step, waited for.

Inside a job submitted by ``virtuai sbatch``, ``srun`` is the job's own
launcher (the in-task runner, first on ``PATH``); this command is what the
``srun`` shim runs anywhere else, as Slurm's srun makes an allocation first:
the command runs as ``-n`` tasks of one batch step, its output is printed
here, and the exit status is the step's.
"""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer

from virtuai.cli import output
from virtuai.cli.client import Client
from virtuai.cli.clock import clock_of
from virtuai.cli.config import load_connection
from virtuai.cli.jobs import JOBS
from virtuai.cli.jobs import _until_finished as until_finished
from virtuai.cli.slurmjob import job_body, server_is_local, submitter
from virtuai.slurmfront.options import BY_SHORT, Arg, OptionError, lookup_long, parse_words
from virtuai.slurmfront.resolve import Context, resolve

SRUN_ONLY_FLAGS = frozenset(
    {
        "-l",
        "--label",
        "--pty",
        "-u",
        "--unbuffered",
        "--overlap",
        "--exact",
        "-K",
        "--kill-on-bad-exit",
    }
)
SRUN_CONTEXT = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
    "help_option_names": ["--help"],
}


def register(app: typer.Typer, panel: str) -> None:
    app.command("srun", context_settings=SRUN_CONTEXT, rich_help_panel=panel)(srun)


def srun(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None,
        typer.Argument(metavar="[OPTIONS] COMMAND [ARGS]...", show_default=False),
    ] = None,
) -> None:
    """Run a command as a job step (-n tasks) and wait for it; its output is printed here."""
    args = list(words or [])
    launcher: list[str] = []
    cli_words: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        word = args[i]
        if word in SRUN_ONLY_FLAGS or word.startswith("--mpi="):
            launcher.append(word)
        elif word == "--mpi" and i + 1 < len(args):
            launcher += [word, args[i + 1]]
            i += 1
        else:
            cli_words.append(word)
            if _takes_next_word(word) and i + 1 < len(args):
                cli_words.append(args[i + 1])
                i += 1
        i += 1
    command = args[i + 1 :] if args[i : i + 1] == ["--"] else args[i:]
    try:
        parse_words(cli_words, "command line")
    except OptionError as error:
        output.echo_err(f"srun: error: {error.message}")
        raise typer.Exit(2) from None
    if not command:
        output.echo_err("srun: fatal: No command given to execute.")
        raise typer.Exit(2)
    script = f"#!/bin/sh\nexec srun {shlex.join([*launcher, *command])}\n"
    submit_dir = os.getcwd()
    user = submitter()
    res = resolve(script, cli_words, Context(os.path.basename(command[0]), submit_dir, user, {}))
    res.output_pattern = res.error_pattern = ""  # printed here, not written to a file
    for problem in res.problems:
        output.echo_err(f"srun: error: {problem}")
    if res.problems:
        raise typer.Exit(1)
    body, _notes = job_body(
        res,
        script,
        env=os.environ,
        submit_dir=submit_dir,
        submit_host=os.uname().nodename,
        user=user,
        local=server_is_local(load_connection().url),
    )
    with Client.from_environment() as client:
        job = client.post_object(JOBS, body)
        job_id = int(job["id"])
        done = until_finished(client, job_id, clock_of(ctx), None)
        for stream in ("stdout", "stderr"):
            offset = 0
            while True:
                chunk = client.get_object(
                    f"{JOBS}/{job_id}/logs", {"task": 0, "stream": stream, "offset": offset}
                )
                data = str(chunk.get("data") or "")
                typer.echo(data, nl=False, err=stream == "stderr")
                offset = int(chunk.get("offset", offset + len(data)))
                if chunk.get("eof") or not data:
                    break
    code = done.get("exit_code")
    raise typer.Exit(int(code) if code is not None else (0 if done["state"] == "succeeded" else 1))


def _takes_next_word(word: str) -> bool:
    """``-n 2``, ``--time 5``: an option whose value is the next word."""
    try:
        if word.startswith("--"):
            return "=" not in word and lookup_long(word[2:]).arg is Arg.REQUIRED
        option = BY_SHORT.get(word[1:]) if len(word) == 2 else None
    except OptionError:
        return False
    return option is not None and option.arg is Arg.REQUIRED
