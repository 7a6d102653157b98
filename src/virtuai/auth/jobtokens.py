"""Job tokens: what a running job shows to act on itself (``scontrol requeue``).

``vaij_<job>_<attempt>_<mac>``: an HMAC-SHA256, under the installation's key
(``$VIRTUAI_HOME/job-token.key``, 0600, made at first start), of the job id
and attempt.  Nothing is stored: the server recomputes it.  A token is good
only for its own job and attempt; a requeued job's next attempt has another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

PREFIX = "vaij_"
KEY_BYTES = 32
_TOKEN_RE = re.compile(r"^vaij_([0-9]+)_([0-9]+)_([0-9a-f]{64})$")


def job_token(key: bytes, job_id: int, attempt: int) -> str:
    return f"{PREFIX}{job_id}_{attempt}_{_mac(key, job_id, attempt)}"


def verify_job_token(key: bytes, token: str) -> tuple[int, int] | None:
    """``(job_id, attempt)`` if ``token`` is genuine, else ``None``."""
    match = _TOKEN_RE.match(token)
    if not key or not match:
        return None
    job_id, attempt = int(match.group(1)), int(match.group(2))
    if not hmac.compare_digest(match.group(3), _mac(key, job_id, attempt)):
        return None
    return job_id, attempt


def looks_like_job_token(credential: str) -> bool:
    return credential.startswith(PREFIX)


def _mac(key: bytes, job_id: int, attempt: int) -> str:
    return hmac.new(key, f"{job_id}.{attempt}".encode(), hashlib.sha256).hexdigest()


def load_or_create_key(path: Path) -> bytes:
    """The installation's key, created (0600, atomically) on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES))
    os.replace(temporary, path)
    return bytes.fromhex(path.read_text().strip())
