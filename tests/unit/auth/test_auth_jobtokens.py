"""Job tokens: genuine only for their job and attempt, under their key; the key file is 0600."""

from __future__ import annotations

from pathlib import Path

from virtuai.auth.jobtokens import job_token, verify_job_token
from virtuai.auth.keys import load_or_create_key


def test_a_token_names_its_job_and_attempt_only() -> None:
    key = b"a" * 32
    token = job_token(key, 12, 3)
    assert verify_job_token(key, token) == (12, 3)
    assert verify_job_token(b"b" * 32, token) is None
    assert verify_job_token(key, token.replace("_12_", "_13_")) is None
    assert verify_job_token(key, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert verify_job_token(b"", token) is None
    assert verify_job_token(key, "vai_something") is None


def test_the_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "job-token.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
