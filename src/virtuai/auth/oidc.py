"""Verify JWTs from an external OpenID Connect provider and map them to an Identity.

What a token must be to be accepted:

* a JWS signed with an asymmetric algorithm listed in ``oidc.algorithms``
  (``none`` and HS* are refused, in the settings and in tokens), by a key of
  the provider's JWKS chosen by the token's ``kid`` (a token without ``kid``
  is accepted only if exactly one key fits its algorithm);
* ``iss`` equal to ``oidc.issuer``; ``aud`` containing ``oidc.audience`` when
  one is configured (configure one: without it, a token the provider minted
  for any other application is accepted too);
* ``exp`` present and not passed, ``nbf`` and ``iat`` (if present) not in
  the future, each with ``oidc.leeway_s`` of tolerance for clock skew;
* the ``oidc.username_claim`` present and a valid virtuai name.  Choose a
  claim the provider keeps unique and that users cannot edit
  (``preferred_username`` in Keycloak by default; not in every provider).

Groups (``oidc.groups_claim``: a list of strings, or one string) grant roles:
``<group_prefix><tenant>:<role>``, e.g. ``virtuai:physics:member``; a leading
``/`` (Keycloak's full group paths) is ignored; malformed groups are ignored;
the strongest of several roles in one tenant wins.  Members of
``oidc.admin_group`` are platform administrators.

Every failure is an :class:`~virtuai.errors.Unauthenticated` whose message
says what was wrong in plain words; library exceptions never escape.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from virtuai.auth.identity import ROLE_RANK, Identity
from virtuai.auth.jwks import ALGORITHM_KEY_TYPES, FileKeys, Jwk, KeySource, UrlKeys, check_jwks_url
from virtuai.domain.tenancy import NAME_RE, Role
from virtuai.errors import ConfigurationError, Unauthenticated
from virtuai.settings import OidcSettings

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16 * 1024


def _show(value: object, limit: int = 64) -> str:
    """A short repr of an untrusted value, for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return str(timestamp)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _number(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim, or None if absent; raises Unauthenticated if not a finite number."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"malformed token: claim {name!r} is not a time (seconds since 1970)")
    return float(value)


def parse_group(group: str, prefix: str) -> tuple[str, Role] | None:
    """``(tenant, role)`` granted by a group name, or None if it grants nothing.

    >>> parse_group("/virtuai:physics:owner", "virtuai:")
    ('physics', <Role.OWNER: 'owner'>)
    """
    name = group.removeprefix("/")
    if not name.startswith(prefix):
        return None
    tenant, sep, role = name[len(prefix) :].partition(":")
    if not sep or not NAME_RE.fullmatch(tenant):
        return None
    try:
        return tenant, Role(role)
    except ValueError:
        return None


def map_groups(groups: Iterable[str], prefix: str) -> dict[str, Role]:
    """Tenant -> strongest role granted by ``groups``."""
    granted: dict[str, Role] = {}
    for group in groups:
        parsed = parse_group(group, prefix)
        if parsed is not None:
            tenant, role = parsed
            current = granted.get(tenant)
            if current is None or ROLE_RANK[role] > ROLE_RANK[current]:
                granted[tenant] = role
    return granted


class OidcVerifier:
    """Checks bearer JWTs against the configured provider; see the module docstring.

    Building one does no I/O: keys are loaded on the first ``verify``.  It is
    thread-safe.  ``verify`` may block on fetching keys (at most a few seconds),
    so call it from a worker thread, not from an event loop.

    ``clock`` (seconds since the epoch) decides token expiry and key-cache
    ages; ``http_client`` replaces the default HTTP client (tests, proxies).
    """

    def __init__(
        self,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] = time.time,
        http_client: httpx.Client | None = None,
        jwks_ttl_s: float = 300.0,
        jwks_min_refetch_s: float = 10.0,
        jwks_max_stale_s: float = 3600.0,
        fetch_timeout_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._leeway = max(0, settings.leeway_s)
        self._admin_group = (settings.admin_group or "").removeprefix("/") or None
        self._algorithms: tuple[str, ...] = ()
        self._source: KeySource | None = None
        if not self.enabled:
            return
        self._algorithms = self._check_algorithms(settings.algorithms)
        if not settings.username_claim:
            raise ConfigurationError("oidc.username_claim is empty", field="oidc.username_claim")
        self._jws = jwt.PyJWS(algorithms=list(self._algorithms))
        if settings.jwks_file is not None and settings.jwks_url:
            raise ConfigurationError(
                "set only one of oidc.jwks_file and oidc.jwks_url", field="oidc.jwks_url"
            )
        if settings.jwks_file is not None:
            self._source = FileKeys(settings.jwks_file)
        elif settings.jwks_url:
            check_jwks_url(settings.jwks_url)
            self._source = UrlKeys(
                settings.jwks_url,
                client=http_client,
                clock=clock,
                ttl_s=jwks_ttl_s,
                min_refetch_s=jwks_min_refetch_s,
                max_stale_s=jwks_max_stale_s,
                timeout_s=fetch_timeout_s,
            )
        else:
            raise ConfigurationError(
                "oidc.issuer is set but neither oidc.jwks_file nor oidc.jwks_url is",
                field="oidc.jwks_url",
            )
        if not settings.audience:
            log.warning(
                "oidc.audience is not set: tokens the provider issued to any client are accepted"
            )

    @staticmethod
    def _check_algorithms(names: list[str]) -> tuple[str, ...]:
        for name in names:
            if name not in ALGORITHM_KEY_TYPES:
                raise ConfigurationError(
                    f"oidc.algorithms: {name!r} is not accepted; use asymmetric algorithms "
                    f"({', '.join(ALGORITHM_KEY_TYPES)}), never 'none' or HS*",
                    field="oidc.algorithms",
                )
        if not names:
            raise ConfigurationError("oidc.algorithms is empty", field="oidc.algorithms")
        return tuple(dict.fromkeys(names))

    @property
    def enabled(self) -> bool:
        """Whether OIDC sign-in is configured (``oidc.issuer`` is set)."""
        return bool(self._settings.issuer)

    def close(self) -> None:
        """Release the HTTP client this verifier created, if any."""
        if self._source is not None:
            self._source.close()

    def verify(self, token: str) -> Identity:
        """The identity a valid JWT stands for; raises Unauthenticated otherwise."""
        if self._source is None:
            raise Unauthenticated("sign-in with OIDC tokens is not configured on this server")
        if not isinstance(token, str):
            raise Unauthenticated("malformed token: not a string")
        if not token:
            raise Unauthenticated("malformed token: empty")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"malformed token: longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = self._jws.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise Unauthenticated("malformed token: not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if "crit" in header:
            raise Unauthenticated("malformed token: critical header extensions are not supported")
        if not isinstance(alg, str):
            raise Unauthenticated("malformed token: no algorithm (alg) in the header")
        if alg not in self._algorithms:
            raise Unauthenticated(
                f"token algorithm {_show(alg)} is not accepted "
                f"(accepted: {', '.join(self._algorithms)})"
            )
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("malformed token: the key id (kid) is not a string")
        key = self._find_key(self._source, kid, alg)
        try:
            payload = self._jws.decode_complete(token, key=key.key, algorithms=[alg])["payload"]
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "bad signature: the token was not signed by the identity provider's key "
                f"{_show(key.kid)}"
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated("malformed token: cannot check its signature") from None
        claims = self._parse_claims(payload)
        self._check_claims(claims)
        return self._identity(claims)

    @staticmethod
    def _find_key(source: KeySource, kid: str | None, alg: str) -> Jwk:
        keys = source.keys()
        key = _select(keys, kid, alg)
        if key is None and source.refreshable:
            # The provider may have rotated its keys since we fetched them.
            keys = source.keys(refresh=True)
            key = _select(keys, kid, alg)
        if key is not None:
            return key
        if kid is None:
            raise Unauthenticated(
                f"token has no key id (kid), and the identity provider has no single {alg} key"
            )
        if any(k.kid == kid for k in keys):
            raise Unauthenticated(f"key {_show(kid)} of the identity provider cannot verify {alg}")
        raise Unauthenticated(
            f"unknown key id (kid) {_show(kid)}: the identity provider has no such key"
        )

    @staticmethod
    def _parse_claims(payload: bytes) -> dict[str, Any]:
        try:
            claims = json.loads(payload, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise Unauthenticated("malformed token: the payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("malformed token: the payload is not a JSON object")
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        issuer, audience = self._settings.issuer, self._settings.audience
        iss = claims.get("iss")
        if iss is None:
            raise Unauthenticated("token has no issuer (iss)")
        if iss != issuer:
            raise Unauthenticated(
                f"wrong issuer: token issued by {_show(iss)}, expected {issuer!r}"
            )
        if audience:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
            if auds is None:
                raise Unauthenticated(f"token has no audience (aud); expected {audience!r}")
            if audience not in auds:
                raise Unauthenticated(
                    f"wrong audience: token is for {_show(aud)}, not for {audience!r}"
                )
        now, leeway = self._clock(), self._leeway
        exp, nbf, iat = (_number(claims, name) for name in ("exp", "nbf", "iat"))
        if exp is None:
            raise Unauthenticated("token has no expiry time (exp)")
        if now - leeway >= exp:
            raise Unauthenticated(f"token expired at {_when(exp)}")
        if nbf is not None and nbf > now + leeway:
            raise Unauthenticated(f"token not valid yet: not before {_when(nbf)}")
        if iat is not None and iat > now + leeway:
            raise Unauthenticated(
                f"token not valid yet: issued in the future, at {_when(iat)} "
                "(are the clocks in sync?)"
            )

    def _identity(self, claims: dict[str, Any]) -> Identity:
        claim = self._settings.username_claim
        username = claims.get(claim)
        if username is None:
            raise Unauthenticated(f"token has no {claim!r} claim, which names the user")
        if not isinstance(username, str) or not NAME_RE.fullmatch(username):
            raise Unauthenticated(
                f"user name {_show(username)} from claim {claim!r} is not a valid virtuai name: "
                "1-63 lower-case letters, digits and '-'"
            )
        raw = claims.get(self._settings.groups_claim)
        if isinstance(raw, str):
            raw = [raw]
        groups = [g for g in raw if isinstance(g, str)] if isinstance(raw, list) else []
        is_admin = self._admin_group is not None and any(
            g.removeprefix("/") == self._admin_group for g in groups
        )
        return Identity(
            username=username,
            is_admin=is_admin,
            tenant_roles=map_groups(groups, self._settings.group_prefix),
            source="oidc",
        )


def _select(keys: tuple[Jwk, ...], kid: str | None, alg: str) -> Jwk | None:
    """The key for a token's ``kid`` and ``alg``, or None."""
    if kid is not None:
        return next((k for k in keys if k.kid == kid and k.can_verify(alg)), None)
    usable = [k for k in keys if k.can_verify(alg)]
    return usable[0] if len(usable) == 1 else None
