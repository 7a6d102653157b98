"""The command line's config file: where the server is and which token to send.

The file is ``$XDG_CONFIG_HOME/virtuai/cli.yaml`` (``~/.config/virtuai/cli.yaml``
by default) with two keys::

    url: http://127.0.0.1:8642
    token: vai_...

``url`` may name several servers of one installation (a YAML list, or URLs
separated by commas); the CLI tries the next when one does not answer.

``virtuai up`` writes it at first start and the CLI reads it; this module is
the one place that knows its format, so that both sides can use it without the
server importing the CLI.  It holds a credential, so it is written atomically
with mode 0600 in a directory of mode 0700.  Pure standard library and PyYAML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from virtuai.errors import ConfigurationError
from virtuai.fsio import write_atomic

DEFAULT_URL = "http://127.0.0.1:8642"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class CliConfig:
    """What the file says; a key that is absent is ``None``."""

    url: str | None = None
    token: str | None = None


def cli_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/virtuai/cli.yaml``, else ``~/.config/virtuai/cli.yaml``.

    As the XDG spec says, a relative ``XDG_CONFIG_HOME`` is ignored.
    """
    environ = os.environ if env is None else env
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "virtuai" / "cli.yaml"


def read_cli_config(path: Path | None = None) -> CliConfig:
    """Read the file; a missing file is an empty config, a broken one an error."""
    path = cli_config_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CliConfig()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return CliConfig()
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} must be a mapping with the keys url and token")
    return CliConfig(url=_urls(data, path), token=_text(data, "token", path))


def write_cli_config(url: str, token: str, path: Path | None = None) -> Path:
    """Write ``url`` and ``token`` atomically (mode 0600, directory 0700); return the path.

    A reader sees either the old file or the new one, never a part; the token
    is never readable by others, not even for a moment.
    """
    if not url or not token:
        raise ConfigurationError("the CLI config needs both a url and a token")
    path = cli_config_path() if path is None else path
    _make_private_dir(path.parent)
    content = (
        "# Written by `virtuai up`: where the virtuai server is, and the token to use.\n"
        "# VIRTUAI_URL and VIRTUAI_TOKEN override these values.\n"
        + yaml.safe_dump({"url": url, "token": token}, default_flow_style=False)
    )
    write_atomic(path, content.encode("utf-8"), FILE_MODE)
    return path


def _urls(data: dict[object, object], path: Path) -> str | None:
    """``url`` may list several servers (a YAML list, or commas): the CLI tries them in turn."""
    value = data.get("url")
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigurationError(f"{path}: url must be a non-empty string or list of them")
        return ",".join(v.strip() for v in value)
    return _text(data, "url", path)


def _text(data: dict[object, object], key: str, path: Path) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{path}: {key} must be a non-empty string")
    return value.strip()


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700; an existing one is left as its owner set it."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return
    directory.chmod(DIR_MODE)  # mkdir's mode went through the umask; make it exact


__all__ = [
    "DEFAULT_URL",
    "CliConfig",
    "cli_config_path",
    "read_cli_config",
    "write_cli_config",
]
