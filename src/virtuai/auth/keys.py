"""The server's own secret keys (browser sessions, job tokens): random bytes in 0600 files."""

from __future__ import annotations

import secrets
from pathlib import Path

from virtuai.fsio import write_atomic

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``, created (0600, atomically) on first use."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) < KEY_BYTES:
        key = secrets.token_bytes(KEY_BYTES)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, key, mode=0o600)
    return key
