"""sbatch's options, read as ``getopt_long`` reads them, wherever they come from.

Every option Slurm 22.05's ``sbatch`` knows is in ``OPTIONS`` with what
virtuai makes of it (``Support``), so an option is never dropped without a
word: it is used, accepted with a note saying it has no effect here, or
refused with the reason.  Long options may be abbreviated to any unambiguous
prefix, as ``getopt_long`` allows; ``--opt=value`` and ``--opt value``, ``-n4``
and ``-n 4`` are the same.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class Arg(enum.Enum):
    NONE = "none"
    REQUIRED = "required"
    OPTIONAL = "optional"  # only as --opt=value


class Support(enum.Enum):
    USED = "used"
    NOTE = "accepted"  # accepted; no effect in virtuai (the note says why)
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class OptionDef:
    long: str
    short: str | None
    arg: Arg
    support: Support
    note: str = ""


def _o(
    long: str, short: str | None, arg: Arg, support: Support = Support.USED, note: str = ""
) -> OptionDef:
    return OptionDef(long, short, arg, support, note)


R, N, OPT = Arg.REQUIRED, Arg.NONE, Arg.OPTIONAL
NOTE, NO = Support.NOTE, Support.UNSUPPORTED
_PLACEMENT = "virtuai places tasks itself"
_TUNING = "a hardware tuning hint; virtuai does not apply it"

OPTIONS: tuple[OptionDef, ...] = (
    # names and places
    _o("job-name", "J", R),
    _o("chdir", "D", R),
    _o("partition", "p", R),
    _o("account", "A", R),
    _o("qos", "q", R),
    _o("constraint", "C", R),
    _o("exclusive", None, OPT),
    # sizes
    _o("nodes", "N", R),
    _o("ntasks", "n", R),
    _o("ntasks-per-node", None, R),
    _o("ntasks-per-gpu", None, R),
    _o("cpus-per-task", "c", R),
    _o("cpus-per-gpu", None, R),
    _o("mincpus", None, R),
    _o("mem", None, R),
    _o("mem-per-cpu", None, R),
    _o("mem-per-gpu", None, R),
    # GPUs
    _o("gres", None, R),
    _o("gpus", "G", R),
    _o("gpus-per-node", None, R),
    _o("gpus-per-task", None, R),
    # time
    _o("time", "t", R),
    _o("time-min", None, R),
    # output
    _o("output", "o", R),
    _o("error", "e", R),
    _o("open-mode", None, R),
    # arrays and dependencies
    _o("array", "a", R),
    _o("dependency", "d", R),
    _o("kill-on-invalid-dep", None, R),
    # signals and requeue
    _o("signal", None, R),
    _o("requeue", None, N),
    _o("no-requeue", None, N),
    # environment
    _o("export", None, R),
    # the command itself
    _o("wrap", None, R),
    _o("parsable", None, N),
    _o("test-only", None, N),
    _o("wait", "W", N),
    _o("quiet", "Q", N),
    _o("verbose", "v", N),
    _o("ignore-pbs", None, N),
    # accepted with a note
    _o("mail-type", None, R, NOTE, "virtuai sends no mail"),
    _o("mail-user", None, R, NOTE, "virtuai sends no mail"),
    _o("hint", None, R, NOTE, _TUNING),
    _o("comment", None, R, NOTE, "kept nowhere; virtuai has no job comments"),
    _o("nice", None, OPT, NOTE, "virtuai orders jobs by priority class and fair share"),
    _o("wckey", None, R, NOTE, "virtuai has no workload keys"),
    _o("distribution", "m", R, NOTE, _PLACEMENT),
    _o("cpu-freq", None, R, NOTE, _TUNING),
    _o("gpu-freq", None, R, NOTE, _TUNING),
    _o("gpu-bind", None, R, NOTE, _TUNING),
    _o("mem-bind", None, R, NOTE, _TUNING),
    _o("threads-per-core", None, R, NOTE, _TUNING),
    _o("ntasks-per-core", None, R, NOTE, _TUNING),
    _o("ntasks-per-socket", None, R, NOTE, _TUNING),
    _o("sockets-per-node", None, R, NOTE, _TUNING),
    _o("cores-per-socket", None, R, NOTE, _TUNING),
    _o("extra-node-info", "B", R, NOTE, _TUNING),
    _o("acctg-freq", None, R, NOTE, "virtuai accounts what a job holds, not samples"),
    _o("profile", None, R, NOTE, "virtuai does not profile jobs"),
    _o("propagate", None, OPT, NOTE, "the task's limits are virtuai's"),
    _o("get-user-env", None, OPT, NOTE, "the environment comes from --export"),
    _o("oversubscribe", "s", N, NOTE, "virtuai shares nodes between jobs anyway"),
    _o("spread-job", None, N, NOTE, _PLACEMENT),
    _o("use-min-nodes", None, N, NOTE, _PLACEMENT),
    _o("contiguous", None, N, NOTE, _PLACEMENT),
    _o("no-kill", "k", OPT, NOTE, "a lost node fails the job in virtuai"),
    _o("wait-all-nodes", None, R, NOTE, "a virtuai job starts when all its nodes are up"),
    _o("gres-flags", None, R, NOTE, "virtuai does not place GPUs by socket"),
    _o("switches", None, R, NOTE, "virtuai has no network topology"),
    _o("context", None, R, NOTE, "virtuai has no SELinux contexts"),
    # refused: they change what the job is, and virtuai cannot do it (yet)
    _o("begin", "b", R, NO, "virtuai cannot hold a job until a start time"),
    _o("deadline", None, R, NO, "virtuai has no deadlines"),
    _o("hold", "H", N, NO, "virtuai cannot submit a held job"),
    _o("reservation", None, R, NO, "virtuai has no reservations"),
    _o("licenses", "L", R, NO, "virtuai has no licenses"),
    _o("clusters", "M", R, NO, "use -p with a site name instead"),
    _o("cluster-constraint", None, R, NO, "virtuai has no federation"),
    _o("nodelist", "w", R, NO, _PLACEMENT + "; use -C with a node label"),
    _o("exclude", "x", R, NO, _PLACEMENT),
    _o("nodefile", "F", R, NO, _PLACEMENT),
    _o("core-spec", "S", R, NO, "virtuai does not reserve cores"),
    _o("thread-spec", None, R, NO, "virtuai does not reserve threads"),
    _o("overcommit", "O", N, NO, "virtuai gives each task its own CPUs"),
    _o("tmp", None, R, NO, "virtuai does not reserve scratch disk"),
    _o("gpus-per-socket", None, R, NO, "virtuai does not place by socket"),
    _o("input", "i", R, NO, "a batch job's stdin is empty in virtuai"),
    _o("uid", None, R, NO, "jobs run as their tenant's user"),
    _o("gid", None, R, NO, "jobs run as their tenant's user"),
    _o("priority", None, R, NO, "use --qos (a priority class)"),
    _o("bb", None, R, NO, "virtuai has no burst buffers"),
    _o("bbf", None, R, NO, "virtuai has no burst buffers"),
    _o("container", None, R, NO, "virtuai runs no OCI bundles"),
    _o("network", None, R, NO, "virtuai has no network options"),
    _o("power", None, R, NO, "virtuai has no power options"),
    _o("reboot", None, N, NO, "virtuai does not reboot nodes"),
    _o("delay-boot", None, R, NO, "virtuai does not reboot nodes"),
    _o("mcs-label", None, R, NO, "virtuai has no MCS labels"),
    _o("prefer", None, R, NO, "virtuai has no soft constraints; use -C"),
    _o("export-file", None, R, NO, "use --export"),
    _o("batch", None, R, NO, "virtuai has no node features for the batch step"),
    _o("x11", None, OPT, NO, "virtuai has no X11 forwarding"),
    _o("help", "h", N, NO, "not a directive"),
    _o("usage", "u", N, NO, "not a directive"),
    _o("version", "V", N, NO, "not a directive"),
)
BY_LONG = {o.long: o for o in OPTIONS}
BY_SHORT = {o.short: o for o in OPTIONS if o.short}
# Old spellings Slurm still takes.
ALIASES = {"U": "account", "P": "dependency"}
# Long names Slurm 22.05 takes for another option (same getopt value, so a prefix
# matching both, as --tasks does --tasks-per-node only, is not ambiguous).
LONG_ALIASES = {
    "tasks-per-node": "ntasks-per-node",
    "cluster": "clusters",
    "ntasks-per-tres": "ntasks-per-gpu",  # GPUs are the only TRES it counts in 22.05
}

# SBATCH_* input variables Slurm 22.05 reads, and the option each sets.
ENV_OPTIONS: Mapping[str, str] = {
    "SBATCH_ACCOUNT": "account",
    "SBATCH_ACCTG_FREQ": "acctg-freq",
    "SBATCH_ARRAY_INX": "array",
    "SBATCH_BATCH": "batch",
    "SBATCH_CLUSTERS": "clusters",
    "SLURM_CLUSTERS": "clusters",
    "SBATCH_CONSTRAINT": "constraint",
    "SBATCH_CLUSTER_CONSTRAINT": "cluster-constraint",
    "SBATCH_CORE_SPEC": "core-spec",
    "SBATCH_CPUS_PER_GPU": "cpus-per-gpu",
    "SBATCH_DELAY_BOOT": "delay-boot",
    "SBATCH_DISTRIBUTION": "distribution",
    "SBATCH_ERROR": "error",
    "SBATCH_EXCLUSIVE": "exclusive",
    "SBATCH_EXPORT": "export",
    "SBATCH_GET_USER_ENV": "get-user-env",
    "SBATCH_GPU_BIND": "gpu-bind",
    "SBATCH_GPU_FREQ": "gpu-freq",
    "SBATCH_GPUS": "gpus",
    "SBATCH_GPUS_PER_NODE": "gpus-per-node",
    "SBATCH_GPUS_PER_TASK": "gpus-per-task",
    "SBATCH_GRES": "gres",
    "SBATCH_GRES_FLAGS": "gres-flags",
    "SBATCH_HINT": "hint",
    "SBATCH_IGNORE_PBS": "ignore-pbs",
    "SBATCH_INPUT": "input",
    "SBATCH_JOB_NAME": "job-name",
    "SBATCH_MEM_BIND": "mem-bind",
    "SBATCH_MEM_PER_CPU": "mem-per-cpu",
    "SBATCH_MEM_PER_GPU": "mem-per-gpu",
    "SBATCH_MEM_PER_NODE": "mem",
    "SBATCH_NETWORK": "network",
    "SBATCH_NO_KILL": "no-kill",
    "SBATCH_NO_REQUEUE": "no-requeue",
    "SBATCH_OPEN_MODE": "open-mode",
    "SBATCH_OUTPUT": "output",
    "SBATCH_OVERCOMMIT": "overcommit",
    "SBATCH_PARTITION": "partition",
    "SBATCH_POWER": "power",
    "SBATCH_PROFILE": "profile",
    "SBATCH_QOS": "qos",
    "SBATCH_REQ_SWITCH": "switches",
    "SBATCH_REQUEUE": "requeue",
    "SBATCH_RESERVATION": "reservation",
    "SBATCH_SIGNAL": "signal",
    "SBATCH_SPREAD_JOB": "spread-job",
    "SBATCH_THREAD_SPEC": "thread-spec",
    "SBATCH_THREADS_PER_CORE": "threads-per-core",
    "SBATCH_TIMELIMIT": "time",
    "SBATCH_USE_MIN_NODES": "use-min-nodes",
    "SBATCH_WAIT": "wait",
    "SBATCH_WAIT_ALL_NODES": "wait-all-nodes",
    "SBATCH_WCKEY": "wckey",
}


@dataclass(frozen=True, slots=True)
class Setting:
    """One option as found: which option, its value, where, and how it was written."""

    option: OptionDef
    value: str | None
    origin: str  # "script", "command line" or "environment"
    line: int | None  # the script's line (1-based), None elsewhere
    text: str  # as written: "--mem=4G", "-n 4", "SBATCH_QOS=high"


class OptionError(ValueError):
    """An option ``sbatch`` itself would refuse (unknown, ambiguous, missing its value)."""

    def __init__(self, message: str, line: int | None = None, text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.text = text


def lookup_long(name: str) -> OptionDef:
    """An exact long name, else a unique prefix of one, as ``getopt_long`` matches."""
    if name in BY_LONG:
        return BY_LONG[name]
    if name in LONG_ALIASES:
        return BY_LONG[LONG_ALIASES[name]]
    spellings = [*BY_LONG, *LONG_ALIASES]
    matches = [s for s in spellings if s.startswith(name)] if name else []
    found = {LONG_ALIASES.get(s, s) for s in matches}
    if len(found) == 1:
        return BY_LONG[found.pop()]
    if not matches:
        raise OptionError(_unknown_long(name))
    names = ", ".join(f"--{s}" for s in matches)
    raise OptionError(f"--{name} is ambiguous: {names}")


# Options of other tools, or of older Slurm, seen in real scripts: what to do instead.
_NOT_SBATCH = {
    "workdir": "Slurm 22.05 dropped it: use --chdir",
    "immediate": "salloc and srun have it, sbatch does not",
    "pty": "it is srun's",
    "cpu-bind": "it is srun's (sbatch passes SLURM_CPU_BIND on to srun)",
    "cpu_bind": "it is srun's (sbatch passes SLURM_CPU_BIND on to srun)",
}


def _unknown_long(name: str) -> str:
    hint = _NOT_SBATCH.get(name)
    return f"--{name} is not an sbatch option" + (f" ({hint})" if hint else "")


def parse_words(
    words: Sequence[str], origin: str, lines: Sequence[int | None] | None = None
) -> tuple[list[Setting], list[str]]:
    """Settings from argv-style ``words``, and what is left from the first non-option on.

    ``lines[i]`` is the script line of ``words[i]``.  ``--`` ends the options.
    Errors carry the line of the word that caused them.
    """
    settings: list[Setting] = []
    i = 0

    def line_of(index: int) -> int | None:
        return lines[index] if lines is not None and index < len(lines) else None

    while i < len(words):
        word = words[i]
        line = line_of(i)
        if word == "--":
            return settings, list(words[i + 1 :])
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            try:
                option = lookup_long(name)
            except OptionError as error:
                raise OptionError(error.message, line, word) from None
            if option.arg is Arg.NONE and eq:
                raise OptionError(f"--{option.long} takes no value", line, word)
            if option.arg is Arg.REQUIRED and not eq:
                if i + 1 >= len(words):
                    raise OptionError(f"--{option.long} needs a value", line, word)
                i += 1
                value = words[i]
                word = f"{word} {value}"
            settings.append(
                Setting(
                    option, value if eq or option.arg is Arg.REQUIRED else None, origin, line, word
                )
            )
            i += 1
            continue
        if word.startswith("-") and len(word) > 1:
            j = 1
            while j < len(word):
                letter = word[j]
                alias = ALIASES.get(letter)
                found = BY_LONG[alias] if alias else BY_SHORT.get(letter)
                if found is None:
                    raise OptionError(f"-{letter} is not an sbatch option", line, word)
                option = found
                if option.arg is Arg.NONE or option.arg is Arg.OPTIONAL:
                    settings.append(Setting(option, None, origin, line, f"-{letter}"))
                    j += 1
                    continue
                value = word[j + 1 :]
                text = word
                if not value:
                    if i + 1 >= len(words):
                        raise OptionError(f"-{letter} needs a value", line, word)
                    i += 1
                    value = words[i]
                    text = f"{word} {value}"
                settings.append(Setting(option, value, origin, line, text))
                break
            i += 1
            continue
        return settings, list(words[i:])
    return settings, []


def from_environment(env: Mapping[str, str]) -> list[Setting]:
    """The ``SBATCH_*`` variables Slurm honours, as settings (flags: any value sets them)."""
    out: list[Setting] = []
    for var, long in ENV_OPTIONS.items():
        if var in env:
            option = BY_LONG[long]
            value = None if option.arg is Arg.NONE else env[var]
            if option.arg is Arg.OPTIONAL and not env[var]:
                value = None
            out.append(Setting(option, value, "environment", None, f"{var}={env[var]}"))
    return out


def known_long_names() -> Iterable[str]:
    return BY_LONG.keys()
