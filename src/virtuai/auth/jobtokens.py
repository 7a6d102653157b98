"""Job tokens: what a running job shows to act on itself (``scontrol requeue``).

``vaij_<job>_<attempt>_<mac>``: an HMAC-SHA256, under the installation's key
(``$VIRTUAI_HOME/job-token.key``, 0600, made at first start), of the job id
and attempt.  Nothing is stored: the server recomputes it.  A token is good
only for its own job and attempt; a requeued job's next attempt has another.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "vaij_"
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


def notebook_secret(key: bytes, job_id: int, attempt: int) -> str:
    """What the proxy shows a notebook (``domain.notebooks.SECRET_HEADER``), and what the
    notebook's launcher expects: recomputed by every server of the installation, never
    stored, and not derivable from the job token (another message under the key)."""
    if not key:
        raise ValueError("notebook secrets need the installation's key")
    return hmac.new(key, f"notebook:{job_id}.{attempt}".encode(), hashlib.sha256).hexdigest()
