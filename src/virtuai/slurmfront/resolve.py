"""From a batch script, its command line and environment to what Slurm would give the job.

``resolve()`` applies the directives, then the ``SBATCH_*`` variables, then
the command line (each later source overrides the earlier, as in Slurm), and
computes the values ``sbatch`` would: nodes, tasks, CPUs, memory per node,
GPUs, time limit, array indices, dependencies, output files, working
directory.  Every directive comes back with its line and its fate; whatever
virtuai cannot honour is a ``Problem`` (never dropped in silence).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from virtuai.slurmfront import values as v
from virtuai.slurmfront.options import (
    OptionError,
    Setting,
    Support,
    from_environment,
    parse_words,
)
from virtuai.slurmfront.resolution import (
    DEFAULT_MEM_PER_CPU,
    MEMORY_OPTIONS,
    UNLIMITED_CAP_S,
    Context,
    Directive,
    Fate,
    Problem,
    Resolution,
)
from virtuai.slurmfront.script import ScriptError, scan

__all__ = ["UNLIMITED_CAP_S", "Context", "Resolution", "resolve", "virtuai_dependency"]


def resolve(
    script: str,
    cli_words: Sequence[str],
    ctx: Context,
    script_args: Sequence[str] = (),
) -> Resolution:
    """The whole resolution; never raises for a bad script or option (see ``problems``)."""
    res = Resolution(script_args=list(script_args))
    settings: list[Setting] = []
    cli_settings, leftover = _cli_settings(cli_words, res)
    wrap = next((s.value for s in reversed(cli_settings) if s.option.long == "wrap"), None)
    if wrap is not None:
        script = f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{wrap}\n"
    if leftover:
        res.problems.append(
            Problem("invalid", f"unexpected arguments {leftover}", None, "command line")
        )
    try:
        scanned = scan(script)
    except ScriptError as error:
        res.problems.append(Problem("invalid", error.message, error.line))
        scanned = None
    if scanned is not None:
        res.interpreter = scanned.interpreter
        res.notes.extend(scanned.warnings)
        for index, entry in enumerate(scanned.directives):
            try:
                found, rest = parse_words(entry.words, "script", [entry.line] * len(entry.words))
            except OptionError as error:
                message = error.message
                following = scanned.directives[index + 1 : index + 2]
                if message.endswith("needs a value") and following and following[0].words:
                    # sbatch joins every directive into one argv, so its getopt would take
                    # the next line's first word as the value: say so rather than do it.
                    message += (
                        f" (Slurm would take line {following[0].line}'s "
                        f"{following[0].words[0]!r} as it)"
                    )
                _bad_directive(res, entry.line, entry.text, message, "unknown")
                continue
            if rest:
                _bad_directive(res, entry.line, entry.text, _not_an_option(rest[0]), "unknown")
            settings.extend(found)
        for entry in scanned.foreign:
            reason = (
                f"{entry.text.split()[0]} directives are not read by virtuai (Slurm would "
                "translate them; --ignore-pbs there)"
            )
            res.directives.append(
                Directive(entry.line, entry.text, "script", None, None, Fate.UNSUPPORTED, reason)
            )
            res.problems.append(Problem("unsupported", reason, entry.line))
        for entry in scanned.ignored:
            res.directives.append(
                Directive(
                    entry.line,
                    entry.text,
                    "script",
                    None,
                    None,
                    Fate.IGNORED,
                    f"after the first command (line {scanned.first_command_line}); "
                    "Slurm ignores it",
                )
            )
        for entry in scanned.comments:
            res.directives.append(
                Directive(
                    entry.line,
                    entry.text,
                    "script",
                    None,
                    None,
                    Fate.COMMENT,
                    "a comment, not a directive (only '#SBATCH' at the start of a line is)",
                )
            )
    settings.extend(from_environment(ctx.env))
    settings.extend(cli_settings)
    _apply(res, settings, ctx, wrap is not None)
    res.directives.sort(key=lambda d: (d.line is None, d.line or 0))
    return res


# Dashes that look like '-' (copied from a PDF or a word processor): sbatch takes
# only ASCII '-', so "\u2212\u2212nodes=1" (two minus signs) is a stray word.
_LOOKALIKE_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"


def _not_an_option(word: str) -> str:
    lead = word[:1]
    if lead and lead in _LOOKALIKE_DASHES:
        return (
            f"{word!r} starts with {lead!r} (U+{ord(lead):04X}), not an ASCII '-': sbatch "
            "does not read it as an option (retype the dashes)"
        )
    return f"{word!r} is not an option (sbatch stops reading the line there)"


def _cli_settings(words: Sequence[str], res: Resolution) -> tuple[list[Setting], list[str]]:
    try:
        return parse_words(words, "command line")
    except OptionError as error:
        res.problems.append(Problem("unknown", error.message, None, "command line"))
        return [], []


def _bad_directive(res: Resolution, line: int | None, text: str, reason: str, kind: str) -> None:
    fate = Fate.UNKNOWN if kind == "unknown" else Fate.INVALID
    res.directives.append(Directive(line, text, "script", None, None, fate, reason))
    res.problems.append(Problem(kind, reason, line))


def _apply(res: Resolution, settings: list[Setting], ctx: Context, wrapped: bool) -> None:
    # The last setting of each option wins; the memory options are one choice.
    winner: dict[str, Setting] = {}
    for s in settings:
        key = "memory" if s.option.long in MEMORY_OPTIONS else s.option.long
        previous = winner.get(key)
        if (
            key == "memory"
            and previous is not None
            and previous.origin == s.origin
            and previous.option.long != s.option.long
        ):
            res.problems.append(
                Problem(
                    "invalid",
                    "--mem, --mem-per-cpu and --mem-per-gpu are mutually exclusive",
                    s.line,
                    s.origin,
                )
            )
        if key in ("requeue", "no-requeue"):
            winner.pop("requeue", None)
            winner.pop("no-requeue", None)
        winner[key] = s
    chosen = {id(s) for s in winner.values()}
    values: dict[str, str] = {}
    for s in settings:
        entry = Directive(s.line, s.text, s.origin, s.option.long, s.value, Fate.USED)
        if s.option.support is Support.UNSUPPORTED:
            entry.fate, entry.note = Fate.UNSUPPORTED, s.option.note
            res.problems.append(
                Problem("unsupported", f"--{s.option.long}: {s.option.note}", s.line, s.origin)
            )
        elif id(s) not in chosen:
            entry.fate, entry.note = Fate.OVERRIDDEN, "a later setting of the same option wins"
        elif s.option.support is Support.NOTE:
            entry.fate, entry.note = Fate.ACCEPTED, f"no effect: {s.option.note}"
            res.notes.append(f"--{s.option.long} accepted with no effect: {s.option.note}")
        else:
            values[s.option.long] = s.value if s.value is not None else ""
        res.directives.append(entry)
    entries: dict[str | None, Directive] = {
        e.option: e for e in res.directives if e.fate == Fate.USED and e.option
    }
    for option, value in values.items():
        try:
            _set(res, option, value or "", ctx)
        except v.BadValue as error:
            kind = "unsupported" if isinstance(error, v.UnsupportedValue) else "invalid"
            entry = entries[option]
            entry.fate = Fate.UNSUPPORTED if kind == "unsupported" else Fate.INVALID
            entry.note = str(error)
            res.problems.append(Problem(kind, f"--{option}: {error}", entry.line, entry.origin))
    _derive(res, values, ctx, wrapped, entries)


def _set(res: Resolution, option: str, value: str, ctx: Context) -> None:
    match option:
        case "job-name":
            res.name = value
        case "chdir":
            res.workdir = posixpath.normpath(posixpath.join(ctx.submit_dir, value))
            res.workdir_given = True
        case "partition":
            res.partitions = [p for p in value.split(",") if p]
        case "account":
            res.tenant = value
        case "qos":
            res.qos = value
        case "constraint":
            res.constraints = _constraints(value)
        case "exclusive":
            if value and value.lower() not in ("user", "mcs"):
                raise v.BadValue(f"--exclusive takes user or mcs, not {value!r}")
            res.exclusive = True
        case "nodes":
            res.nodes, res.nodes_max = v.node_range(value)
        case "time":
            seconds = v.time_seconds(value)
            res.time_limit_s = None if seconds == v.UNLIMITED_TIME else seconds
            res.time_default = False
        case "time-min":
            seconds = v.time_seconds(value)
            res.time_min_s = None if seconds == v.UNLIMITED_TIME else seconds
        case "array":
            arr = v.array_range(value)
            res.array, res.array_max_running = list(arr.indices), arr.max_running
        case "dependency":
            deps = v.dependencies(value)
            res.dependencies, res.dependency_any = list(deps.terms), deps.any_of
        case "kill-on-invalid-dep":
            if value.lower() not in ("yes", "no"):
                raise v.BadValue(f"--kill-on-invalid-dep takes yes or no, not {value!r}")
            res.kill_on_invalid_dep = value.lower() == "yes"
        case "open-mode":
            if value.lower() not in ("append", "truncate"):
                raise v.BadValue(f"--open-mode takes append or truncate, not {value!r}")
            res.open_mode = value.lower()
        case "signal":
            res.signal = v.signal_spec(value)
        case "requeue":
            res.requeue = True
        case "no-requeue":
            res.requeue = False
        case "export":
            res.export = v.export_spec(value)
        case "parsable":
            res.parsable = True
        case "wait":
            res.wait = True
        case "test-only":
            res.test_only = True
        case _:
            pass  # read by _derive: sizes, memory, GPUs, output, wrap, flags


def _constraints(value: str) -> list[str]:
    """``-C a100&nvlink`` -> ``["a100", "nvlink"]``; OR, counts and brackets are refused.

    Slurm 22.05 reads ``,`` as ``&`` (``-C blade,ib`` is stored as ``blade&ib``).
    """
    if any(char in value for char in "|[]*"):
        raise v.UnsupportedValue(
            f"cannot use constraint {value!r}: virtuai takes features joined by '&' (all of them)"
        )
    return [part.strip() for part in value.replace(",", "&").split("&") if part.strip()]


def _derive(
    res: Resolution,
    values: Mapping[str, str],
    ctx: Context,
    wrapped: bool,
    entries: Mapping[str | None, Directive],
) -> None:
    def number(option: str, minimum: int = 1) -> int | None:
        if option not in values:
            return None
        try:
            return v.integer(values[option], f"--{option}", minimum=minimum)
        except v.BadValue as error:
            _invalid(res, entries, option, error)
            return None

    def parsed(option: str, parse: Any) -> Any:
        if option not in values:
            return None
        try:
            return parse(values[option])
        except v.BadValue as error:
            _invalid(res, entries, option, error)
            return None

    if not res.name:
        res.name = "wrap" if wrapped else ctx.script_name
    if not res.workdir:
        res.workdir = ctx.submit_dir
    ntasks = number("ntasks")
    per_node = number("ntasks-per-node")
    nodes_given = "nodes" in values
    if not nodes_given and ntasks and per_node:
        res.nodes = res.nodes_max = -(-ntasks // per_node)
    if res.nodes_max > res.nodes:
        res.notes.append(
            f"--nodes={res.nodes}-{res.nodes_max}: virtuai allocates the minimum, {res.nodes}"
        )
    res.ntasks = ntasks or (res.nodes * per_node if per_node else res.nodes)
    if res.ntasks < res.nodes:
        # As sbatch: "can't run 1 processes on 2 nodes, setting nnodes to 1".
        res.notes.append(
            f"can't run {res.ntasks} processes on {res.nodes} nodes, setting nnodes to "
            f"{res.ntasks} (as Slurm does)"
        )
        res.nodes = res.nodes_max = res.ntasks
    res.ntasks_per_node = per_node or max(1, -(-res.ntasks // res.nodes))
    if per_node and ntasks and per_node * res.nodes < ntasks:
        res.ntasks_per_node = -(-ntasks // res.nodes)
    if res.nodes > 1:
        res.notes.append(
            f"{res.nodes} nodes: a gang of {res.nodes} virtuai tasks, one per node, which "
            "virtuai may place on one machine; srun reaches them all (no PMIx: ranks "
            "rendezvous through the environment, MASTER_ADDR and MASTER_PORT)"
        )
    # GPUs: per node from --gres/--gpus-per-node, per task, or a job total.
    gres = parsed("gres", v.gres_gpus)
    if gres is not None:
        gpus, others = gres
        if others:
            message = f"--gres {', '.join(others)}: virtuai schedules only GPUs as GRES"
            _invalid(res, entries, "gres", v.BadValue(message), kind="unsupported")
        if gpus is not None:
            res.gpus_per_node, res.gpu_type = gpus.count, gpus.type
    for option, scale in (("gpus-per-node", 1), ("gpus-per-task", res.ntasks_per_node)):
        count = parsed(option, v.gpu_count)
        if count is not None:
            res.gpus_per_node, res.gpu_type = count.count * scale, count.type or res.gpu_type
            if option == "gpus-per-task":
                res.gpus_per_task = count.count
    total = parsed("gpus", v.gpu_count)
    if total is not None:
        res.gpus_per_node = -(-total.count // res.nodes)
        res.gpu_type = total.type or res.gpu_type
        if total.count % res.nodes:
            res.notes.append(
                f"--gpus={total.count} over {res.nodes} nodes: virtuai gives each node "
                f"{res.gpus_per_node}"
            )
    res.gpus = res.gpus_per_node * res.nodes
    per_gpu_tasks = number("ntasks-per-gpu")
    if per_gpu_tasks is not None and not res.gpus:
        message = "it needs GPUs (--gres=gpu:N, --gpus-per-node or --gpus)"
        _invalid(res, entries, "ntasks-per-gpu", v.BadValue(message))
    elif per_gpu_tasks is not None:
        _tasks_per_gpu(res, per_gpu_tasks, ntasks is not None or per_node is not None)
    # CPUs.
    cpus = number("cpus-per-task")
    per_gpu = number("cpus-per-gpu")
    if cpus is not None:
        res.cpus_per_task = cpus
    elif per_gpu is not None and res.gpus_per_node:
        res.cpus_per_task = max(1, -(-per_gpu * res.gpus_per_node // res.ntasks_per_node))
    mincpus = number("mincpus")
    if mincpus is not None and res.cpus_per_node < mincpus:
        res.cpus_per_task = -(-mincpus // res.ntasks_per_node)
    # Memory per node, in Slurm's units (a bare number is MiB).
    if "mem" in values:
        mem = parsed("mem", v.memory_bytes)
        if mem is not None:
            res.mem_default = False
            if mem == 0:
                res.mem_whole_node = True
                res.notes.append("--mem=0 asks for all of a node's memory")
            res.mem_per_node = mem
    elif "mem-per-cpu" in values:
        mem = parsed("mem-per-cpu", v.memory_bytes)
        if mem is not None:
            res.mem_default = False
            res.mem_per_node = mem * res.cpus_per_node
    elif "mem-per-gpu" in values:
        mem = parsed("mem-per-gpu", v.memory_bytes)
        if mem is not None:
            res.mem_default = False
            res.mem_per_node = mem * res.gpus_per_node
            if not res.gpus_per_node:
                _invalid(res, entries, "mem-per-gpu", v.BadValue("--mem-per-gpu without GPUs"))
    if res.mem_default:
        res.mem_per_node = DEFAULT_MEM_PER_CPU * res.cpus_per_node
        res.notes.append(
            "no memory asked for: virtuai gives 1 GiB per CPU (Slurm's default is the site's)"
        )
    if res.time_default:
        res.notes.append(
            "no --time: virtuai's default limit is 1 hour (Slurm's is the partition's)"
        )
    if res.time_limit_s is None:
        res.notes.append("unlimited --time: virtuai caps it at 365 days")
    if res.time_min_s is not None:
        res.notes.append("--time-min: virtuai runs the job for its full --time")
    if res.exclusive:
        res.notes.append(
            "--exclusive: virtuai gives the job what it asks for; the node may be shared"
        )
    # Output files: relative to the working directory, default slurm-%j.out.
    default_out = "slurm-%A_%a.out" if res.array is not None else "slurm-%j.out"
    out = values.get("output") or default_out
    err = values.get("error") or out
    res.output_pattern, res.error_pattern = _file(out, ""), _file(err, "")
    res.output = _file(out, res.workdir)
    res.error = _file(err, res.workdir)
    _dependency_problems(res)


def _tasks_per_gpu(res: Resolution, count: int, tasks_given: bool) -> None:
    """``--ntasks-per-gpu=N``: N tasks for each GPU (sbatch 22.05: ``--gpus-per-node=2
    --ntasks-per-gpu=1`` is NumTasks=2 a node), each bound to its GPU when N is 1."""
    if not tasks_given:
        res.ntasks_per_node = count * res.gpus_per_node
        res.ntasks = res.ntasks_per_node * res.nodes
    if count == 1 and res.gpus_per_task is None and res.ntasks_per_node == res.gpus_per_node:
        res.gpus_per_task = 1
    elif count > 1:
        res.notes.append(f"--ntasks-per-gpu={count}: the tasks of a node share its GPUs")


def _file(pattern: str, workdir: str) -> str:
    if pattern.lower() == "none":
        return "/dev/null"
    if not workdir:
        return pattern
    return posixpath.normpath(posixpath.join(workdir, pattern))


def _invalid(
    res: Resolution,
    entries: Mapping[str | None, Directive],
    option: str,
    error: v.BadValue,
    kind: str = "invalid",
) -> None:
    entry = entries.get(option)
    if entry is not None:
        entry.fate = Fate.INVALID if kind == "invalid" else Fate.UNSUPPORTED
        entry.note = str(error)
    line = entry.line if entry else None
    origin = entry.origin if entry else "script"
    res.problems.append(Problem(kind, f"--{option}: {error}", line, origin))


def _dependency_problems(res: Resolution) -> None:
    """What virtuai's dependency model (after, afterok, afterany, afternotok, aftercorr,
    singleton on job ids or array elements, joined by ',' or '?') cannot hold:
    afterburstbuffer, and aftercorr on an element or with a delay."""
    reasons: list[str] = []
    supported = (
        v.DepKind.AFTER,
        v.DepKind.AFTER_OK,
        v.DepKind.AFTER_ANY,
        v.DepKind.AFTER_NOT_OK,
        v.DepKind.AFTER_CORR,
        v.DepKind.SINGLETON,
    )
    for term in res.dependencies:
        if term.kind not in supported:
            reasons.append(term.kind.value)
        elif term.kind is v.DepKind.AFTER_CORR and term.job is not None and "_" in term.job:
            reasons.append(f"aftercorr on an array element ({term.job})")
    if reasons:
        entry = next(
            (d for d in res.directives if d.option == "dependency" and d.fate == Fate.USED), None
        )
        why = "virtuai cannot yet wait for " + ", ".join(dict.fromkeys(reasons))
        if entry is not None:
            entry.fate, entry.note = Fate.UNSUPPORTED, why
        res.problems.append(
            Problem("unsupported", f"--dependency: {why}", entry.line if entry else None)
        )


def virtuai_dependency(res: Resolution) -> str | None:
    """The dependency in virtuai's own syntax (Slurm's, less what it cannot hold)."""
    terms: list[str] = []
    for term in res.dependencies:
        if term.kind is v.DepKind.SINGLETON:
            terms.append("singleton")
        elif term.job is not None and term.kind.value in _KINDS:
            if term.kind is v.DepKind.AFTER_CORR and "_" in term.job:
                continue
            delay = f"+{term.delay_min}" if term.delay_min else ""
            terms.append(f"{term.kind.value}:{term.job}{delay}")
    return ("?" if res.dependency_any else ",").join(terms) or None


_KINDS = frozenset({"after", "afterok", "afterany", "afternotok", "aftercorr"})
