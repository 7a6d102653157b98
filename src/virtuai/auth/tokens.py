"""API tokens: long random secrets, shown to their owner once and stored only as a hash.

A token looks like ``vai_<43 URL-safe base64 characters>``: 256 random bits from
:mod:`secrets` behind a fixed prefix.  The prefix lets secret scanners (GitHub
secret scanning, gitleaks, trufflehog) spot a leaked token with a simple
pattern, and lets the server tell an API token from a JWT without parsing it
(a JWT always starts with ``eyJ``, the base64 of ``{"``).
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "vai_"
TOKEN_BYTES = 32  # 256 bits
# base64url without padding of TOKEN_BYTES bytes: ceil(32 * 4 / 3) = 43 characters.
TOKEN_RE = re.compile(r"^vai_[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    """A fresh API token: ``vai_`` followed by 256 random bits, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest (64 characters) under which ``token`` is stored.

    Why a fast hash and not bcrypt/scrypt/argon2: those are slow on purpose to
    make guessing *low-entropy* secrets (passwords) expensive.  An API token is
    256 random bits, so guessing it is infeasible whatever the hash costs;
    slowness would buy nothing and cost CPU on every request.  A deterministic
    unsalted hash also lets the server find a token's row with one indexed
    lookup (``WHERE token_hash = ?``) instead of trying every stored salt.  A
    stolen table of hashes is of no use: SHA-256 is preimage resistant.  Since
    the lookup is by hash, the comparison leaks nothing useful about the token
    through timing.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_api_token(value: str) -> bool:
    """Whether a bearer credential is an API token (by prefix) rather than a JWT.

    This only routes the credential to the right check; it does not validate it.
    """
    return value.startswith(TOKEN_PREFIX)
