"""Reading the simulator's YAML files with errors that name the file, the line and the field.

``load_yaml`` parses with PyYAML's safe loader, but every mapping comes back as
a ``YamlMap``: a ``dict`` that also knows the line of each of its keys.
``Section`` walks such a mapping and turns every bad value into
``InvalidRequest("cluster.yaml line 7: pools.gpu.memory: cannot read ...")``
with ``field="pools.gpu.memory"``.  Unknown keys are errors too, so that a typo
(``half_lfe``) does not silently fall back to a default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from virtuai.domain.units import parse_cpu, parse_duration, parse_memory
from virtuai.errors import InvalidRequest
from virtuai.sim.textfile import MAX_SECONDS, unreadable

__all__ = ["Section", "YamlMap", "load_yaml"]

T = TypeVar("T")


class YamlMap(dict[str, Any]):
    """A mapping read from YAML, with the (1-based) line of itself and of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}


class _Loader(yaml.SafeLoader):
    """The safe loader, building ``YamlMap``s and refusing keys given twice."""

    source = "<yaml>"


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    result = YamlMap(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = str(loader.construct_object(key_node, deep=True))
        if key in result:
            raise InvalidRequest(f"{loader.source} line {line}: {key}: given twice", field=key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, *, name: str | None = None) -> Section:
    """Parse ``path`` (a mapping at the top) and return it as the root ``Section``."""
    source = name or path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, source, exc) from None
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> Section:
    """Parse YAML ``text``; ``source`` names it in error messages."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        loader.source = source
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidRequest(f"{source}{where}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:  # lists or mappings nested thousands deep
        raise InvalidRequest(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, YamlMap):
        raise InvalidRequest(f"{source} line 1: expected a mapping of keys to values at the top")
    return Section(source, "", data)


class Section:
    """One mapping of a YAML file, read field by field with located errors."""

    def __init__(self, source: str, path: str, data: YamlMap, line: int | None = None) -> None:
        self.source = source
        self.path = path
        self.data = data
        self.line = data.line if line is None else line  # of the key that names it

    def field(self, key: str) -> str:
        """The dotted path of ``key`` (``pools.gpu.memory``)."""
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str | None = None) -> int:
        if key is None:
            return self.line
        return self.data.lines.get(key, self.line)

    def error(self, key: str | None, message: str) -> InvalidRequest:
        """An error located at ``key`` (or at this mapping when ``None``)."""
        field = self.field(key) if key is not None else (self.path or None)
        prefix = f"{field}: " if field else ""
        return InvalidRequest(
            f"{self.source} line {self.line_of(key)}: {prefix}{message}", field=field
        )

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> list[str]:
        return list(self.data)

    def check_known(self, allowed: set[str] | frozenset[str]) -> None:
        """Refuse keys not in ``allowed`` (a typo must not fall back to a default)."""
        for key in self.data:
            if key not in allowed:
                raise self.error(key, f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def get(self, key: str, parse: Callable[[Any, str], T], default: T) -> T:
        """``parse(value, field)`` of ``key``, or ``default`` when it is missing or null."""
        value = self.data.get(key)
        if value is None:
            return default
        return self.parse(key, value, parse)

    def require(self, key: str, parse: Callable[[Any, str], T]) -> T:
        if self.data.get(key) is None:
            raise self.missing(key)
        return self.parse(key, self.data[key], parse)

    def missing(self, key: str) -> InvalidRequest:
        field = self.field(key)
        return InvalidRequest(f"{self.source} line {self.line}: {field} is required", field=field)

    def parse(self, key: str, value: Any, parse: Callable[[Any, str], T]) -> T:
        """Apply ``parse`` and locate any ``InvalidRequest`` it raises at ``key``."""
        field = self.field(key)
        try:
            return parse(value, field)
        except InvalidRequest as exc:
            message = exc.message.removeprefix(f"{field}: ")
            raise self.error(key, message) from None

    def section(self, key: str, *, required: bool = False) -> Section | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.missing(key)
            return None
        if not isinstance(value, YamlMap):
            raise self.error(key, "expected a mapping of keys to values")
        return Section(self.source, self.field(key), value, self.line_of(key))

    def sections(self) -> Iterator[tuple[str, Section]]:
        """Each value of this mapping as a ``Section`` (for ``pools:`` and ``tenants:``)."""
        for key, value in self.data.items():
            mapping = YamlMap(self.line_of(key)) if value is None else value
            if not isinstance(mapping, YamlMap):
                raise self.error(key, "expected a mapping of keys to values")
            yield key, Section(self.source, self.field(key), mapping, self.line_of(key))


# Value parsers: ``(value, field) -> parsed``, raising InvalidRequest(field=field). -------


def as_str(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(f"{field}: expected text, not {value!r}", field=field)
    return str(value)


def as_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidRequest(f"{field}: expected true or false, not {value!r}", field=field)


def as_count(value: Any, field: str) -> int:
    """A whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{field}: expected a whole number >= 0, not {value!r}", field=field)
    return value


def as_positive(value: Any, field: str) -> float:
    """A number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidRequest(f"{field}: expected a number > 0, not {value!r}", field=field)
    if not math.isfinite(value):
        raise InvalidRequest(f"{field}: expected a finite number, not {value!r}", field=field)
    return float(value)


def as_fraction(value: Any, field: str) -> float:
    """A number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequest(f"{field}: expected a number from 0 to 1, not {value!r}", field=field)
    return float(value)


def as_cpu(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(
            f"{field}: expected CPUs such as 64 or 0.5, not {value!r}", field=field
        )
    return parse_cpu(value, field=field)


def as_memory(value: Any, field: str) -> int:
    if isinstance(value, bool | float):
        raise InvalidRequest(f"{field}: expected memory such as 512Gi, not {value!r}", field=field)
    return parse_memory(value if isinstance(value, int) else str(value), field=field)


def as_seconds(value: Any, field: str) -> float:
    """A duration: a number is seconds; text is ``90s``, ``2h``, ``7d`` or Slurm's forms;
    at most ``MAX_SECONDS``."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected a duration such as 3600 or 7d", field=field)
    if isinstance(value, int | float):
        seconds = as_positive(value, field)
    else:
        seconds = float(parse_duration(str(value), field=field))
    if seconds > MAX_SECONDS:
        raise InvalidRequest(
            f"{field}: must be at most {MAX_SECONDS:,} seconds (317 years), not {value!r}",
            field=field,
        )
    return seconds
