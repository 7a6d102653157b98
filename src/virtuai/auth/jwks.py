"""The identity provider's public keys (a JWKS), from a file on disk or from a URL.

Both sources hand out an immutable tuple of :class:`Jwk`; the verifier picks
one by key id (``kid``) and algorithm.  Failures to get keys are logged here,
with the details an operator needs, and surface to callers as
:class:`~virtuai.errors.Unauthenticated` with a plain message.

Rules applied to every key, whatever the source:

* only public parts are used: private members (``d``, ``p``, ...) that a
  misconfigured provider publishes are dropped, with a warning;
* keys whose ``use`` is not ``sig`` or whose ``key_ops`` lack ``verify`` are skipped;
* RSA keys shorter than 2048 bits are skipped;
* a key with an ``alg`` verifies only that algorithm; a key without one verifies
  the algorithms of its type (RSA: RS*/PS*; EC: ES* of its curve; OKP: EdDSA).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt import PyJWTError
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from virtuai.errors import ConfigurationError, Unauthenticated

log = logging.getLogger(__name__)

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

# The asymmetric algorithms we verify, with the key type (and curves) each needs.
# Anything else, ``none`` and the HMAC family (HS*) above all, is never accepted:
# with a public key as the "secret", HS256 lets anyone forge tokens.
ALGORITHM_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 1024 * 1024
CANNOT_READ_KEYS = "cannot read the identity provider's keys"
CANNOT_FETCH_KEYS = "cannot fetch the identity provider's keys"

# The public members of each key type; everything else (private parts) is dropped.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable verification key from a JWKS."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey

    def can_verify(self, alg: str) -> bool:
        kty, curves = ALGORITHM_KEY_TYPES[alg]
        if self.kty != kty or (curves is not None and self.crv not in curves):
            return False
        return self.alg is None or self.alg == alg


class KeySourceError(Exception):
    """Keys could not be read or parsed; the message is for the operator's log."""


def _public_key(jwk: dict[str, Any]) -> tuple[PublicKey, str | None]:
    """The public key of one JWK member and its curve; raises ValueError if unusable."""
    kty = jwk.get("kty")
    if kty not in _PUBLIC_MEMBERS:
        raise ValueError(f"unsupported key type {kty!r}")
    public = {"kty": kty, **{m: jwk[m] for m in _PUBLIC_MEMBERS[kty] if m in jwk}}
    key: Any
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(public)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(public)
        else:
            key = OKPAlgorithm.from_jwk(public)
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"invalid {kty} key: {exc}") from None
    if isinstance(
        key, RSAPrivateKey | EllipticCurvePrivateKey | Ed25519PrivateKey | Ed448PrivateKey
    ):  # pragma: no cover - private members were dropped above
        key = key.public_key()
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits is too short (< {MIN_RSA_BITS})")
    crv = public.get("crv")
    return key, crv if isinstance(crv, str) else None


def parse_jwks(data: bytes | str, *, origin: str) -> tuple[Jwk, ...]:
    """The usable keys of a JWKS document; unusable members are skipped with a warning.

    Raises :class:`KeySourceError` if the document itself is not a JWKS.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise KeySourceError(f"{origin}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeySourceError(f'{origin}: not a JWKS (an object with a "keys" list)')
    keys: list[Jwk] = []
    for index, member in enumerate(doc["keys"]):
        where = f"{origin}: key #{index}"
        if not isinstance(member, dict):
            log.warning("%s is not an object; skipped", where)
            continue
        kid, alg, use, ops = (member.get(m) for m in ("kid", "alg", "use", "key_ops"))
        where += f" (kid {kid!r})"
        if _PRIVATE_MEMBERS & member.keys():
            log.warning("%s publishes private key material; only its public part is used", where)
        if kid is not None and not isinstance(kid, str):
            log.warning("%s has a non-string kid; skipped", where)
            continue
        if use is not None and use != "sig":
            continue  # an encryption key: not ours to use, not an error
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if alg is not None and alg not in ALGORITHM_KEY_TYPES:
            log.info("%s is for algorithm %r, which is not supported; skipped", where, alg)
            continue
        try:
            key, crv = _public_key(member)
        except ValueError as exc:
            log.warning("%s skipped: %s", where, exc)
            continue
        keys.append(Jwk(kid=kid, kty=member["kty"], crv=crv, alg=alg, key=key))
    return tuple(keys)


class KeySource(Protocol):
    """Where keys come from; ``keys()`` raises Unauthenticated when they cannot be had."""

    @property
    def refreshable(self) -> bool:
        """Whether ``keys(refresh=True)`` may find keys that ``keys()`` did not."""
        ...

    def keys(self, *, refresh: bool = False) -> tuple[Jwk, ...]: ...

    def close(self) -> None: ...


class FileKeys:
    """A JWKS file on disk, re-read whenever it changes (mtime, size or inode)."""

    refreshable = False

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._keys: tuple[Jwk, ...] = ()

    def keys(self, *, refresh: bool = False) -> tuple[Jwk, ...]:
        with self._lock:
            try:
                st = os.stat(self._path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
                if stamp != self._stamp:
                    self._keys = parse_jwks(self._path.read_bytes(), origin=str(self._path))
                    self._stamp = stamp
                    log.info("loaded %d key(s) from %s", len(self._keys), self._path)
            except (OSError, KeySourceError) as exc:
                # Fail closed: a broken file must not keep old (maybe revoked) keys alive.
                self._stamp, self._keys = None, ()
                log.warning("cannot read the JWKS file: %s", exc)
                raise Unauthenticated(CANNOT_READ_KEYS) from None
            return self._keys

    def close(self) -> None:
        pass


def check_jwks_url(url: str) -> None:
    """Refuse a key URL that an attacker on the network could answer.

    Keys decide who can sign in, so they must come over HTTPS; plain HTTP is
    allowed only to a loopback address (a sidecar, tests).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return
    raise ConfigurationError(
        f"oidc.jwks_url {url!r} must be an https:// URL (http:// only to localhost)",
        field="oidc.jwks_url",
    )


class UrlKeys:
    """A JWKS fetched over HTTP(S) and cached.

    * Keys are fetched on first use and again once older than ``ttl_s``.
    * ``keys(refresh=True)`` (a token with an unknown ``kid``: the provider may
      have rotated its keys) refetches, but at most once per ``min_refetch_s``,
      so tokens with made-up key ids cannot make us hammer the provider.
    * After a failed fetch no new attempt is made for ``min_refetch_s``; the
      last good keys are served until they are ``max_stale_s`` old, so a short
      provider outage does not lock everybody out.
    """

    refreshable = True

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = 300.0,
        min_refetch_s: float = 10.0,
        max_stale_s: float = 3600.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._url = url
        self._client = client
        self._own_client = client is None
        self._clock = clock
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._max_stale_s = max_stale_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._keys: tuple[Jwk, ...] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None

    def keys(self, *, refresh: bool = False) -> tuple[Jwk, ...]:
        # One fetch at a time: concurrent callers wait for it and share its result.
        with self._lock:
            now = self._clock()
            age = now - self._fetched_at
            if self._keys is not None and age < self._ttl_s and not refresh:
                return self._keys
            recent = (
                self._attempted_at is not None and now - self._attempted_at < self._min_refetch_s
            )
            if not recent:
                self._attempted_at = now
                try:
                    self._keys, self._fetched_at = self._fetch(), now
                    return self._keys
                except KeySourceError as exc:
                    log.warning("cannot fetch the JWKS from %s: %s", self._url, exc)
            if self._keys is not None and age < self._max_stale_s:
                return self._keys
            raise Unauthenticated(CANNOT_FETCH_KEYS)

    def _fetch(self) -> tuple[Jwk, ...]:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout_s, follow_redirects=False)
        deadline = time.monotonic() + 2 * self._timeout_s
        body = bytearray()
        try:
            with self._client.stream(
                "GET", self._url, headers={"Accept": "application/json"}, timeout=self._timeout_s
            ) as response:
                if response.status_code != 200:
                    raise KeySourceError(f"HTTP status {response.status_code}")
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise KeySourceError(f"response larger than {MAX_JWKS_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise KeySourceError("response too slow")
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            raise KeySourceError(f"{type(exc).__name__}: {exc}") from None
        keys = parse_jwks(bytes(body), origin=self._url)
        log.info("fetched %d key(s) from %s", len(keys), self._url)
        return keys

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
