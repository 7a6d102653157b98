"""Early checks of what users type, with the domain's own parsers.

They give a fast, clear usage error (exit 2) before anything is sent; the
values are still sent as typed, and the server checks them again.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import typer

from virtuai.domain.tenancy import validate_name
from virtuai.domain.units import parse_cpu, parse_duration, parse_memory
from virtuai.errors import InvalidRequest

T = TypeVar("T")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UNLIMITED = frozenset({"unlimited", "none"})


def checked(raw: str, parse: Callable[[str], T], option: str) -> T:
    """``parse(raw)``, with the domain's error turned into a usage error for ``option``."""
    try:
        return parse(raw)
    except InvalidRequest as exc:
        message = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
        raise typer.BadParameter(message, param_hint=option) from None


def cpu(raw: str, option: str = "--cpu") -> str:
    checked(raw, parse_cpu, option)
    return raw


def memory(raw: str, option: str = "--memory") -> str:
    checked(raw, parse_memory, option)
    return raw


def duration(raw: str, option: str = "--time") -> str:
    checked(raw, parse_duration, option)
    return raw


def name(raw: str, option: str) -> str:
    return checked(raw, validate_name, option)


def count(raw: str, option: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise typer.BadParameter(f"{raw!r} is not a whole number >= 0", param_hint=option)
    return value


def is_unlimited(raw: str) -> bool:
    return raw.strip().lower() in UNLIMITED


def env_pairs(items: Iterable[str], option: str = "--env") -> dict[str, str]:
    """``["K=V", ...]`` as a mapping; a later ``K`` wins, as in a shell."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        if not ENV_NAME_RE.match(key):
            raise typer.BadParameter(
                f"{key!r} is not a valid variable name (letters, digits and _, "
                "not starting with a digit)",
                param_hint=option,
            )
        env[key] = value
    return env


def since(raw: str, option: str = "--since") -> str:
    """An ISO date (``2024-05-01``) or date and time (``2024-05-01T12:00``)."""
    try:
        dt.datetime.fromisoformat(raw)
    except ValueError:
        raise typer.BadParameter(
            f"{raw!r} is not an ISO date or date-time such as 2024-05-01 or 2024-05-01T12:00",
            param_hint=option,
        ) from None
    return raw
