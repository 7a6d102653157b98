"""Where the server's URL and the token come from.

Highest first: the ``VIRTUAI_URL`` / ``VIRTUAI_TOKEN`` environment variables,
then the config file written by ``virtuai up`` (see ``virtuai.clientconfig``),
then the default URL and no token.  An empty variable counts as unset.

The file's token belongs to the file's server: it is sent only when the URL in
use is the file's URL (or the file names none), so that pointing
``VIRTUAI_URL`` at another server never hands that server a local credential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from virtuai.clientconfig import DEFAULT_URL, CliConfig, cli_config_path, read_cli_config
from virtuai.errors import ConfigurationError

URL_VAR = "VIRTUAI_URL"
TOKEN_VAR = "VIRTUAI_TOKEN"


@dataclass(frozen=True, slots=True)
class Connection:
    """The server to talk to, the token to send, and where each came from (for messages)."""

    url: str
    token: str | None
    url_source: str
    token_source: str | None
    config_path: Path
    # Every server to try, in order (``url`` is the first); several when the config or
    # VIRTUAI_URL lists them separated by commas.
    urls: tuple[str, ...] = ()

    @property
    def servers(self) -> tuple[str, ...]:
        return self.urls or (self.url,)


def load_connection(env: Mapping[str, str] | None = None, path: Path | None = None) -> Connection:
    environ = os.environ if env is None else env
    env_url = environ.get(URL_VAR, "").strip()
    env_token = environ.get(TOKEN_VAR, "").strip()
    config_path = cli_config_path(environ) if path is None else path
    # A broken file must not stop someone who set both variables.
    file = CliConfig() if env_url and env_token else read_cli_config(config_path)

    if env_url:
        url, url_source = env_url, URL_VAR
    elif file.url:
        url, url_source = file.url, str(config_path)
    else:
        url, url_source = DEFAULT_URL, "the default"
    urls = _checked_urls(url, url_source)

    token: str | None
    if env_token:
        token, token_source = env_token, TOKEN_VAR
    elif file.token and (file.url is None or _checked_urls(file.url, str(config_path)) == urls):
        token, token_source = file.token, str(config_path)
    else:
        token, token_source = None, None
    return Connection(
        url=urls[0],
        token=token,
        url_source=url_source,
        token_source=token_source,
        config_path=config_path,
        urls=urls,
    )


def missing_token_hint(connection: Connection) -> str:
    return (
        f"no token is configured for {connection.url}: `virtuai login URL` with your "
        f"token, or set {TOKEN_VAR} (`virtuai up` writes {connection.config_path} for its "
        "administrator at first start)"
    )


def _checked_urls(text: str, source: str) -> tuple[str, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(_checked_url(part, source) for part in parts or [text])


def _checked_url(url: str, source: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"the server URL {url!r} (from {source}) is not an http:// or https:// URL"
        )
    return url.rstrip("/")
