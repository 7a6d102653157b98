"""Parsing and printing of the quantities users type: memory, CPUs, durations.

Memory follows Kubernetes (``512Mi``, ``4Gi``, ``4G``, ``1.5Gi``, plain bytes);
durations follow Slurm's ``--time`` (``MM``, ``MM:SS``, ``HH:MM:SS``,
``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) plus suffixed forms (``90s``, ``30m``,
``2h``, ``1d``).  CPUs are counted in millicores so that ``500m`` and ``0.5``
are the same request and all arithmetic stays in integers.
"""

from __future__ import annotations

import re
import signal
from decimal import Decimal

from virtuai.errors import InvalidRequest

_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
# re.ASCII everywhere: only 0-9 are digits (an Arabic-Indic one is not 1).
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGT]i?)?[bB]?\s*$", re.ASCII)

_DURATION_SUFFIX = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIXED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.ASCII)
_SLURM_DAYS_RE = re.compile(r"^(\d+)-(\d+)(?::(\d+))?(?::(\d+))?$", re.ASCII)
_SLURM_CLOCK_RE = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$", re.ASCII)
_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(m?)\s*$", re.ASCII)

# What the database holds (32-bit INTEGER columns on PostgreSQL for ids and seconds,
# BIGINT for bytes and millicores), with room for sums: larger is refused as input.
MAX_INT32 = 2**31 - 1
MAX_DURATION_S = MAX_INT32  # 68 years
MAX_MEMORY = 2**60  # 1 EiB
MAX_CPU_MILLI = 10**12  # a billion CPUs
# The smallest request that means something: a job asking for less would run unlimited.
MIN_CPU_MILLI = 1
MIN_MEMORY = 2**20


def is_ascii_number(text: str) -> bool:
    """Whether ``text`` is a non-empty run of the ASCII digits 0-9 (``str.isdigit`` also
    accepts Arabic-Indic digits and superscripts)."""
    return text.isascii() and text.isdigit()


MILLI = 1000


def parse_memory(text: str | int, *, field: str = "memory", minimum: int = 0) -> int:
    """Return a number of bytes, e.g. ``parse_memory("4Gi") == 4 * 2**30``.

    ``minimum`` > 0 refuses smaller amounts (requests: a job must hold some memory).
    """
    if isinstance(text, int):
        if text < 0:
            raise InvalidRequest(f"{field} must not be negative", field=field)
        return _bounded_memory(text, field, minimum)
    match = _MEMORY_RE.match(text)
    if not match:
        raise InvalidRequest(
            f"{field}: cannot read {text!r} as memory; use a number with a unit such as "
            "512Mi, 4Gi or 4G",
            field=field,
        )
    number, unit = match.group(1), match.group(2) or ""
    if len(number) > 40:
        raise InvalidRequest(f"{field}: at most {format_memory(MAX_MEMORY)}", field=field)
    return _bounded_memory(int(Decimal(number) * _MEMORY_UNITS[unit]), field, minimum)


def _bounded_memory(value: int, field: str, minimum: int) -> int:
    if value > MAX_MEMORY:
        raise InvalidRequest(f"{field}: at most {format_memory(MAX_MEMORY)}", field=field)
    if value < minimum:
        raise InvalidRequest(
            f"{field}: at least {format_memory(minimum)} (less rounds to nothing)", field=field
        )
    return value


def format_memory(n_bytes: int) -> str:
    """Exact in the largest unit that divides with a readable count (``4Gi``, ``1536Mi``),
    else rounded to one decimal in the largest unit (``23.5Gi``, for display only)."""
    units = [u for u in ("Ti", "Gi", "Mi", "Ki") if n_bytes >= _MEMORY_UNITS[u]]
    for unit in units:
        count, rest = divmod(n_bytes, _MEMORY_UNITS[unit])
        if rest == 0 and count <= _READABLE_COUNT:
            return f"{count}{unit}"
    if units:
        return f"{n_bytes / _MEMORY_UNITS[units[0]]:.1f}{units[0]}"
    return f"{n_bytes}"


_READABLE_COUNT = 2**20


def parse_cpu(text: str | int | float, *, field: str = "cpu", minimum: int = 0) -> int:
    """Return millicores: ``"2"`` -> 2000, ``"0.5"`` -> 500, ``"250m"`` -> 250.

    ``minimum`` > 0 (in millicores) refuses smaller amounts, and so anything that rounds
    to zero millicores (``0.0001``).
    """
    if isinstance(text, bool):
        text = str(text)  # True is not a number of CPUs
    if isinstance(text, int | float) and text < 0:
        raise InvalidRequest(f"{field} must not be negative", field=field)
    raw = str(text).strip() if not isinstance(text, float) else f"{text:.6f}"
    match = _CPU_RE.match(raw)
    if not match or len(match.group(1)) > 40:
        raise InvalidRequest(
            f"{field}: cannot read {text!r} as CPUs; use a number such as 2, 0.5 or 500m",
            field=field,
        )
    number = Decimal(match.group(1))
    value = int(number) if match.group(2) else int(number * MILLI)
    if value > MAX_CPU_MILLI:
        raise InvalidRequest(f"{field}: at most {MAX_CPU_MILLI // MILLI} CPUs", field=field)
    if value < minimum:
        raise InvalidRequest(
            f"{field}: at least {format_cpu(minimum) if minimum >= MILLI else f'{minimum}m'} "
            "(less rounds to nothing)",
            field=field,
        )
    return value


def format_cpu(millicores: int) -> str:
    whole, milli = divmod(millicores, MILLI)
    if milli == 0:
        return str(whole)
    return f"{whole}.{milli:03d}".rstrip("0")


def parse_duration(text: str | int, *, field: str = "time") -> int:
    """Return whole seconds from Slurm's ``--time`` formats or ``90s``/``30m``/``2h``/``1d``.

    As in Slurm, a bare number is minutes, ``A:B`` is minutes:seconds and
    ``A:B:C`` is hours:minutes:seconds.
    """
    seconds = text if isinstance(text, int) else _parse_duration_text(text.strip(), field)
    if seconds <= 0:
        raise InvalidRequest(f"{field} must be longer than zero", field=field)
    if seconds > MAX_DURATION_S:
        raise InvalidRequest(
            f"{field}: at most {format_duration(MAX_DURATION_S)} (68 years)", field=field
        )
    return seconds


def _parse_duration_text(raw: str, field: str) -> int:
    if len(raw) > 64:  # no duration needs more; int() of a huge string is slow
        raise InvalidRequest(f"{field}: too long to be a duration", field=field)
    if match := _SUFFIXED_RE.match(raw):
        return int(Decimal(match.group(1)) * _DURATION_SUFFIX[match.group(2)])
    if match := _SLURM_DAYS_RE.match(raw):
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if match := _SLURM_CLOCK_RE.match(raw):
        parts = [int(g) for g in match.groups() if g is not None]
        if len(parts) == 1:
            return parts[0] * 60
        if len(parts) == 2:
            return parts[0] * 60 + parts[1]
        return (parts[0] * 60 + parts[1]) * 60 + parts[2]
    raise InvalidRequest(
        f"{field}: cannot read {raw!r} as a duration; use MM, MM:SS, HH:MM:SS, D-HH:MM:SS, "
        "or a number with s, m, h or d (90s, 30m, 2h)",
        field=field,
    )


def format_duration(seconds: float) -> str:
    """Slurm-like ``D-HH:MM:SS`` (days only when needed)."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def parse_signal_spec(text: str, *, field: str = "signal") -> tuple[int, int]:
    """Slurm's ``--signal [B:]SIG[@SECONDS]`` as ``(signal number, grace seconds)``.

    ``USR1@60``, ``SIGUSR1@60`` and ``10@60`` are the same.  Without ``@`` the
    grace period is 60 s, Slurm's default.
    """
    raw = text.strip().removeprefix("B:")
    name, _, seconds = raw.partition("@")
    try:
        if is_ascii_number(name):
            signo = signal.Signals(int(name))
        else:
            upper = name.upper()
            signo = signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise InvalidRequest(
            f"{field}: unknown signal {name!r}; use a name such as USR1 or TERM, or a number",
            field=field,
        ) from None
    if signo in (signal.SIGKILL, signal.SIGSTOP):
        raise InvalidRequest(
            f"{field}: {signo.name} cannot be caught, so it cannot ask for a checkpoint",
            field=field,
        )
    if not seconds:
        return int(signo), 60
    if not is_ascii_number(seconds) or len(seconds) > 5 or int(seconds) > 65535:
        raise InvalidRequest(f"{field}: {seconds!r} must be seconds from 0 to 65535", field=field)
    return int(signo), int(seconds)
