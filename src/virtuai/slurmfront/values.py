"""Slurm 22.05's value formats, each parsed as its ``sbatch`` parses it.

Every parser raises ``BadValue`` with a plain sentence; the caller adds the
line and the option.  Only ASCII digits are numbers (``[0-9]``, never
``str.isdigit``, which also takes ``²`` and ``٣``).
"""

from __future__ import annotations

import enum
import re
import signal as _signal
from dataclasses import dataclass

MIB = 2**20
MAX_ARRAY_SIZE = 10_000  # virtuai's limit (Slurm's MaxArraySize default is 1001)
MAX_ARRAY_INDEX = 4_000_000
UNLIMITED_TIME = -1

_INT_RE = re.compile(r"^[0-9]+$")
_MEMORY_RE = re.compile(r"^([0-9]+)([KkMmGgTt])?[Bb]?$")
_MEMORY_FACTOR_MIB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


class BadValue(ValueError):
    """A value Slurm would refuse; the message says why."""


class UnsupportedValue(BadValue):
    """A value Slurm takes but virtuai cannot honour (``-C 'a|b'``, ``--signal=R:...``)."""


def integer(text: str, what: str, *, minimum: int = 0) -> int:
    text = text.strip()
    if not _INT_RE.match(text):
        raise BadValue(f"{what} must be a whole number, not {text!r}")
    value = int(text)
    if value < minimum:
        raise BadValue(f"{what} must be at least {minimum}, not {value}")
    return value


# -- time ------------------------------------------------------------------------------------

# "D-" (no hours) is D days to sbatch 22.05, as its time_str2secs reads it.
_DAYS_RE = re.compile(r"^([0-9]+)-([0-9]*)(?::([0-9]+))?(?::([0-9]+))?$")
_CLOCK_RE = re.compile(r"^([0-9]+)(?::([0-9]+))?(?::([0-9]+))?$")


def time_seconds(text: str) -> int:
    """Slurm's ``--time``: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.

    Slurm keeps limits in whole minutes and rounds seconds up (``1:30`` is 2
    minutes), so the result is a multiple of 60.  ``UNLIMITED``/``INFINITE``
    and ``0`` (no limit) give ``UNLIMITED_TIME``.
    """
    raw = text.strip()
    if raw.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return UNLIMITED_TIME
    match = _DAYS_RE.match(raw)
    if match and (match.group(2) or match.group(3) is None):
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    elif match := _CLOCK_RE.match(raw):
        parts = [int(g) for g in match.groups() if g is not None]
        days = 0
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    else:
        raise BadValue(
            f"cannot read {raw!r} as a time; Slurm takes minutes, minutes:seconds, "
            "hours:minutes:seconds, days-hours, days-hours:minutes or days-hours:minutes:seconds"
        )
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        return UNLIMITED_TIME  # "A time limit of zero requests that no time limit be imposed"
    return -(-total // 60) * 60


# -- memory ----------------------------------------------------------------------------------


def memory_bytes(text: str) -> int:
    """Slurm's memory sizes: a bare number is MiB; ``K``, ``M``, ``G``, ``T`` are binary.

    ``4G`` is 4 GiB here (virtuai's own ``4G`` elsewhere is 4x10^9 bytes).
    ``0`` is returned as 0: for ``--mem`` it means all of a node's memory.
    """
    raw = text.strip()
    match = _MEMORY_RE.match(raw)
    if not match:
        raise BadValue(
            f"cannot read {raw!r} as memory; Slurm takes a whole number of MiB, or one "
            "with K, M, G or T (e.g. 4000, 16G)"
        )
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    mib = number * _MEMORY_FACTOR_MIB[unit]
    return int(-(-mib // 1)) * MIB if unit == "K" else int(mib * MIB)


# -- GPUs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuCount:
    count: int
    type: str | None = None


_TYPED_COUNT_RE = re.compile(r"^(?:([A-Za-z0-9_.\-]+):)?([0-9]+)$")


def gpu_count(text: str) -> GpuCount:
    """``--gpus``, ``--gpus-per-node``, ``--gpus-per-task``: ``[type:]N``."""
    raw = text.strip()
    if raw.startswith("gpu:"):
        raw = raw[4:]
    match = _TYPED_COUNT_RE.match(raw)
    if not match:
        raise BadValue(f"cannot read {text.strip()!r} as GPUs; use N or TYPE:N (a100:2)")
    return GpuCount(int(match.group(2)), match.group(1))


def gres_gpus(text: str) -> tuple[GpuCount | None, list[str]]:
    """``--gres=gpu[:type]:N[,other...]`` -> (GPUs per node, other GRES names).

    ``gpu`` alone is one GPU; ``gres/gpu:2`` is the new spelling; ``none``
    asks for none.  Other GRES (``nvme:1``, ``shard:2``) are returned by name
    so the caller can refuse them.
    """
    gpus: GpuCount | None = None
    others: list[str] = []
    for raw in text.strip().split(","):
        item = raw.strip().removeprefix("gres/").removeprefix("gres:")
        if not item or item.lower() == "none":
            continue
        name, _, rest = item.partition(":")
        if name != "gpu":
            others.append(name)
            continue
        gpu_type: str | None = None
        count = 1
        if rest:
            first, _, last = rest.rpartition(":")
            if _INT_RE.match(last):
                count = int(last)
                gpu_type = first or None
            elif not first:
                gpu_type = last
            else:
                raise BadValue(f"cannot read GRES {item!r}; use gpu:N or gpu:TYPE:N")
        if gpus is not None:
            raise BadValue("gpu is given twice in --gres")
        gpus = GpuCount(count, gpu_type)
    return gpus, others


# -- nodes -----------------------------------------------------------------------------------


def node_range(text: str) -> tuple[int, int]:
    """``-N``: ``N`` or ``MIN-MAX`` (``MIN-`` is refused, as sbatch refuses it)."""
    raw = text.strip()
    low, dash, high = raw.partition("-")
    minimum = integer(low, "--nodes", minimum=1)
    if dash and not high:
        raise BadValue(f"--nodes={raw}: the maximum is missing (use {minimum} or {minimum}-MAX)")
    maximum = integer(high, "--nodes", minimum=minimum) if dash else minimum
    return minimum, maximum


# -- arrays ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArrayRange:
    indices: tuple[int, ...]
    max_running: int | None


_ARRAY_PART_RE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")


def array_range(text: str) -> ArrayRange:
    """``-a``: ``0-99``, ``1,3,5-7``, ``0-15:4``, each optionally ``%N`` (at most N at once)."""
    spec, percent, throttle = text.strip().partition("%")
    if spec.startswith("[") and spec.endswith("]"):  # Slurm also takes [0-9]
        spec = spec[1:-1]
    max_running = integer(throttle, "the array throttle %N", minimum=0) if percent else None
    indices: set[int] = set()
    for part in spec.split(","):
        match = _ARRAY_PART_RE.match(part.strip())
        if not match:
            raise BadValue(f"cannot read array range {part.strip()!r}; use 0-99, 1,3,5-7, 0-15:4")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else 1
        if end < start or step < 1:
            raise BadValue(f"array range {part.strip()!r} is empty")
        if end > MAX_ARRAY_INDEX:
            raise BadValue(f"array indices go up to {MAX_ARRAY_INDEX}")
        if (end - start) // step + 1 + len(indices) > MAX_ARRAY_SIZE:
            raise BadValue(f"an array has at most {MAX_ARRAY_SIZE} elements")
        indices.update(range(start, end + 1, step))
    return ArrayRange(tuple(sorted(indices)), max_running or None)


# -- dependencies ----------------------------------------------------------------------------


class DepKind(enum.StrEnum):
    AFTER = "after"  # after the job started (or was cancelled)
    AFTER_ANY = "afterany"
    AFTER_OK = "afterok"
    AFTER_NOT_OK = "afternotok"
    AFTER_CORR = "aftercorr"
    AFTER_BURST_BUFFER = "afterburstbuffer"
    SINGLETON = "singleton"


@dataclass(frozen=True, slots=True)
class DepTerm:
    kind: DepKind
    job: str | None  # "123" or "123_4"; None for singleton
    delay_min: int = 0  # after:ID+MIN

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.kind.value}
        if self.job is not None:
            out["job"] = self.job
        if self.delay_min:
            out["delay_minutes"] = self.delay_min
        return out


@dataclass(frozen=True, slots=True)
class Dependencies:
    terms: tuple[DepTerm, ...]
    any_of: bool  # "?" separators: any one term suffices; "," all must


_DEP_JOB_RE = re.compile(r"^([0-9]+(?:_[0-9]+)?)(?:\+([0-9]+))?$")


def dependencies(text: str) -> Dependencies:
    """``-d``: ``type:job[:job...]`` joined by ``,`` (all) or ``?`` (any), or ``singleton``."""
    raw = text.strip()
    if not raw:
        raise BadValue("the dependency is empty")
    if "," in raw and "?" in raw:
        raise BadValue("a dependency list uses either ',' (all) or '?' (any), not both")
    any_of = "?" in raw
    terms: list[DepTerm] = []
    for part in raw.split("?" if any_of else ","):
        name, _, jobs = part.strip().partition(":")
        try:
            kind = DepKind(name.lower())
        except ValueError:
            raise BadValue(
                f"unknown dependency type {name!r}; use after, afterok, afterany, afternotok, "
                "aftercorr or singleton"
            ) from None
        if kind is DepKind.SINGLETON:
            if jobs:
                raise BadValue("singleton takes no job ids")
            terms.append(DepTerm(kind, None))
            continue
        if not jobs:
            raise BadValue(f"{name} needs at least one job id ({name}:ID)")
        for job in jobs.split(":"):
            match = _DEP_JOB_RE.match(job)
            if not match:
                raise BadValue(f"cannot read job id {job!r} in {part.strip()!r}")
            delay = int(match.group(2)) if match.group(2) else 0
            if delay and kind not in (
                DepKind.AFTER,
                DepKind.AFTER_ANY,
                DepKind.AFTER_OK,
                DepKind.AFTER_NOT_OK,
            ):
                raise BadValue(f"{name} takes no +time")
            terms.append(DepTerm(kind, match.group(1), delay))
    return Dependencies(tuple(dict.fromkeys(terms)), any_of)


# -- signals ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalSpec:
    signal: str  # e.g. "USR1"
    number: int
    seconds: int  # before the time limit
    batch_only: bool  # B: only the batch shell


def signal_spec(text: str) -> SignalSpec:
    """``--signal=[{R|B}:]SIG[@TIME]``; TIME in seconds, default 60, at most 65535."""
    raw = text.strip()
    flags, colon, rest = raw.partition(":")
    batch_only = False
    if colon and flags and set(flags.upper()) <= {"B", "R"}:
        batch_only = "B" in flags.upper()
        if "R" in flags.upper():
            raise UnsupportedValue("the R: (reservation) flag is not supported by virtuai")
        raw = rest
    name, at, seconds_text = raw.partition("@")
    signo = _signal_number(name)
    seconds = 60
    if at:
        seconds = integer(seconds_text, "--signal's @TIME", minimum=0)
        if seconds > 65535:
            raise BadValue("--signal's @TIME is at most 65535 seconds")
    return SignalSpec(_signal.Signals(signo).name.removeprefix("SIG"), signo, seconds, batch_only)


def _signal_number(name: str) -> int:
    if _INT_RE.match(name):
        number = int(name)
        try:
            _signal.Signals(number)
        except ValueError:
            raise BadValue(f"unknown signal number {number}") from None
        return number
    upper = name.strip().upper()
    try:
        return int(_signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper])
    except KeyError:
        raise BadValue(f"unknown signal {name!r}; use a name such as USR1 or a number") from None


# -- --export --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSpec:
    all: bool  # the submitter's whole environment
    names: tuple[str, ...]  # variables passed by name
    values: tuple[tuple[str, str], ...]  # VAR=value given here


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def export_spec(text: str) -> ExportSpec:
    """``--export``: ``ALL``, ``NONE``, or ``[ALL,]VAR[=value],...``.

    With names but no ``ALL``, Slurm passes only those (plus its SLURM_* ones).
    """
    raw = text.strip()
    upper = raw.upper()
    if upper == "ALL":
        return ExportSpec(True, (), ())
    if upper in ("NONE", "NIL"):
        return ExportSpec(False, (), ())
    all_vars = False
    names: list[str] = []
    values: list[tuple[str, str]] = []
    for item in _split_export(raw):
        if item.upper() in ("ALL", "NONE", "NIL") and "=" not in item:
            all_vars = all_vars or item.upper() == "ALL"
            continue
        name, eq, value = item.partition("=")
        if not _ENV_NAME_RE.match(name):
            raise BadValue(f"--export: {name!r} is not a variable name")
        if eq:
            values.append((name, value))
        else:
            names.append(name)
    return ExportSpec(all_vars, tuple(names), tuple(values))


def _split_export(text: str) -> list[str]:
    """Commas separate items, except inside a value that follows ``=`` and has no ``=`` next.

    Slurm's own rule: ``A=1,2,B=3`` is A=``1,2`` and B=``3``.
    """
    items: list[str] = []
    for piece in text.split(","):
        if items and "=" in items[-1] and "=" not in piece and not _ENV_NAME_RE.match(piece):
            items[-1] += "," + piece
        elif piece:
            items.append(piece)
    return items


# -- output file patterns --------------------------------------------------------------------

_PATTERN_RE = re.compile(r"%([0-9]*)([%AabJjNnstuxM])")
_NUMERIC = frozenset("AabJjnst")


@dataclass(frozen=True, slots=True)
class PatternContext:
    job_id: int | None
    job_name: str
    user: str
    node: str | None
    array_job_id: int | None = None
    array_index: int | None = None
    task: int = 0
    step: str = "batch"


def expand_pattern(pattern: str, ctx: PatternContext) -> str:
    """``%j %x %A %a %N %u %t %% ...`` as Slurm expands ``--output``; ``%3j`` zero-pads.

    A name containing ``\\`` is taken literally (the backslashes removed), as
    Slurm does.  Unknown fields (job id before submission) stay as written.
    """
    if "\\" in pattern:
        return pattern.replace("\\", "")

    def field(match: re.Match[str]) -> str:
        width, code = match.group(1), match.group(2)
        value = _field_value(code, ctx)
        if value is None:
            return match.group(0)
        if width and code in _NUMERIC and _INT_RE.match(value):
            return value.zfill(min(int(width), 10))
        return value

    return _PATTERN_RE.sub(field, pattern)


def _field_value(code: str, ctx: PatternContext) -> str | None:
    array_job = ctx.array_job_id if ctx.array_job_id is not None else ctx.job_id
    values: dict[str, str | None] = {
        "%": "%",
        "A": None if array_job is None else str(array_job),
        "a": "4294967294" if ctx.array_index is None else str(ctx.array_index),
        "b": "0" if ctx.array_index is None else str(ctx.array_index % 10),
        "J": None if ctx.job_id is None else f"{ctx.job_id}.{ctx.step}",
        "j": None if ctx.job_id is None else str(ctx.job_id),
        "N": ctx.node,
        "n": "0",
        "s": ctx.step,
        "t": str(ctx.task),
        "u": ctx.user,
        "x": ctx.job_name,
        "M": None,
    }
    return values[code]
