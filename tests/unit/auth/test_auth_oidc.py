"""OidcVerifier with keys from a JWKS file: claims, roles, keys and attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from virtuai.auth import Identity, OidcVerifier
from virtuai.domain.tenancy import Role
from virtuai.errors import ConfigurationError, Unauthenticated
from virtuai.settings import OidcSettings


def verifier(idp: Any, **overrides: Any) -> OidcVerifier:
    return OidcVerifier(idp.settings(**overrides), clock=idp.clock)


def rejects(v: OidcVerifier, token: str, match: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated, match=match) as info:
        v.verify(token)
    # A plain message, no library exception attached for a traceback.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"sig") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signature)


# -- the happy path and role mapping ------------------------------------------


def test_valid_token_maps_roles_and_admin(idp: Any) -> None:
    token = idp.token(
        groups=[
            "virtuai:physics:member",
            "/virtuai:chemistry:owner",  # Keycloak full path
            "virtuai:biology:viewer",
            "/virtuai-admins",
            "staff",
        ]
    )
    ident = verifier(idp).verify(token)
    assert ident == Identity(
        username="alice",
        is_admin=True,
        tenant_roles={
            "physics": Role.MEMBER,
            "chemistry": Role.OWNER,
            "biology": Role.VIEWER,
        },
        source="oidc",
    )


def test_ec_p256_key(idp: Any, ec_key: Any) -> None:
    idp.publish(idp.public_jwk(ec_key, "ec-1"))
    token = idp.token(key=ec_key, kid="ec-1", alg="ES256", groups=["virtuai:physics:owner"])
    ident = verifier(idp).verify(token)
    assert ident.tenant_roles == {"physics": Role.OWNER}
    assert not ident.is_admin


def test_strongest_role_wins(idp: Any) -> None:
    groups = ["virtuai:physics:viewer", "virtuai:physics:owner", "virtuai:physics:member"]
    for order in (groups, groups[::-1]):
        ident = verifier(idp).verify(idp.token(groups=order))
        assert ident.tenant_roles == {"physics": Role.OWNER}


def test_bad_groups_are_ignored(idp: Any) -> None:
    bad = [
        "virtuai:Physics:member",  # not a valid tenant name
        "virtuai:-physics:member",
        "virtuai:physics:admin",  # not a role
        "virtuai:physics:Owner",
        "virtuai:physics",
        "virtuai::member",
        "virtuai:a:b:member",
        "physics:member",  # no prefix
        "//virtuai:physics:owner",
        "team/virtuai:physics:owner",  # a subgroup elsewhere in the tree
        "virtuai:" + "x" * 64 + ":owner",
        "virtuai:physics\n:owner",  # '$' in a regex matches before a final newline
        "virtuai:physics:owner\n",
        42,
        None,
        ["virtuai:physics:owner"],
    ]
    ident = verifier(idp).verify(idp.token(groups=[*bad, "virtuai:ok:viewer"]))
    assert ident.tenant_roles == {"ok": Role.VIEWER}
    assert not ident.is_admin


@pytest.mark.parametrize(
    ("groups", "roles"),
    [
        ("virtuai:physics:member", {"physics": Role.MEMBER}),  # one string
        ({"virtuai:physics:member": True}, {}),  # not a list: ignored
        (None, {}),
        ("DROP", {}),  # claim absent
    ],
)
def test_groups_claim_shapes(idp: Any, groups: Any, roles: dict[str, Role]) -> None:
    if groups == "DROP":
        groups = idp.DROP
    assert verifier(idp).verify(idp.token(groups=groups)).tenant_roles == roles


def test_custom_claims_prefix_and_admin_group(idp: Any) -> None:
    v = verifier(
        idp,
        username_claim="uid",
        groups_claim="roles",
        group_prefix="vai-",
        admin_group="/ops",
    )
    ident = v.verify(idp.token(uid="bob", roles=["vai-physics:owner", "/ops"], groups=idp.DROP))
    assert ident == Identity("bob", True, {"physics": Role.OWNER})


def test_no_admin_group_means_no_admins(idp: Any) -> None:
    v = verifier(idp, admin_group=None)
    assert not v.verify(idp.token(groups=["virtuai-admins", "None", ""])).is_admin


# -- claims -------------------------------------------------------------------


def test_expired(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, idp.token(exp=int(idp.clock()) - 31), "token expired at 2023-11-14T22:12:49")
    # Within the 30 s leeway, still good.
    assert v.verify(idp.token(exp=int(idp.clock()) - 29)).username == "alice"


def test_expires_while_cached(idp: Any) -> None:
    v = verifier(idp)
    token = idp.token()
    v.verify(token)
    idp.clock.advance(300 + 30)
    rejects(v, token, "expired")


def test_not_yet_valid(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, idp.token(nbf=int(idp.clock()) + 60), "not valid yet: not before")
    rejects(v, idp.token(iat=int(idp.clock()) + 60), "not valid yet: issued in the future")
    assert v.verify(idp.token(nbf=int(idp.clock()) + 20, iat=int(idp.clock()) + 20))


def test_leeway_is_configurable(idp: Any) -> None:
    v = verifier(idp, leeway_s=0)
    rejects(v, idp.token(exp=int(idp.clock())), "expired")


def test_exp_is_required_and_must_be_a_finite_number(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, idp.token(exp=idp.DROP), r"no expiry time \(exp\)")
    for bad in ("tomorrow", True, [1], float("inf"), float("nan")):
        rejects(v, idp.token(exp=bad), "malformed token")
    rejects(v, idp.token(nbf="now"), "malformed token: claim 'nbf'")
    rejects(v, idp.token(iat=float("-inf")), "malformed token")


def test_wrong_issuer(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, idp.token(iss="https://evil.example.org"), "wrong issuer.*evil.example.org")
    rejects(v, idp.token(iss=idp.ISSUER + "/"), "wrong issuer")
    rejects(v, idp.token(iss=[idp.ISSUER]), "wrong issuer")
    rejects(v, idp.token(iss=idp.DROP), r"no issuer \(iss\)")


def test_wrong_audience(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, idp.token(aud="another-app"), "wrong audience.*another-app")
    rejects(v, idp.token(aud=["a", "b"]), "wrong audience")
    rejects(v, idp.token(aud=idp.DROP), r"no audience \(aud\)")
    rejects(v, idp.token(aud=7), r"no audience \(aud\)")
    assert v.verify(idp.token(aud=["account", idp.AUDIENCE]))


def test_no_audience_configured_accepts_any(idp: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        v = verifier(idp, audience=None)
    assert "oidc.audience is not set" in caplog.text
    assert v.verify(idp.token(aud="another-app"))
    assert v.verify(idp.token(aud=idp.DROP))


def test_missing_username_claim(idp: Any) -> None:
    v = verifier(idp)
    e = rejects(v, idp.token(preferred_username=idp.DROP), "'preferred_username' claim")
    assert "sub" not in e.message  # no silent fallback to another claim


@pytest.mark.parametrize(
    "name", ["Alice", "alice@example.org", "", "a" * 64, "alice\n", 17, ["alice"]]
)
def test_invalid_username(idp: Any, name: Any) -> None:
    rejects(verifier(idp), idp.token(preferred_username=name), "not a valid virtuai name")


# -- keys and signatures ----------------------------------------------------------


def test_signed_by_another_key_with_same_kid(idp: Any, other_rsa_key: Any) -> None:
    rejects(verifier(idp), idp.token(key=other_rsa_key), "bad signature.*'rsa-1'")


def test_tampered_payload(idp: Any) -> None:
    head, _, sig = idp.token().split(".")
    claims = idp.claims(groups=["virtuai-admins"])
    payload = b64(json.dumps(claims).encode())
    rejects(verifier(idp), f"{head}.{payload}.{sig}", "bad signature")


def test_unknown_kid(idp: Any, other_rsa_key: Any) -> None:
    rejects(verifier(idp), idp.token(key=other_rsa_key, kid="rsa-2"), "unknown key id.*'rsa-2'")


def test_embedded_key_in_header_is_not_trusted(idp: Any, other_rsa_key: Any) -> None:
    jwk = idp.public_jwk(other_rsa_key, "evil")
    token = idp.token(key=other_rsa_key, kid="evil", headers={"jwk": jwk, "jku": "http://x/"})
    rejects(verifier(idp), token, "unknown key id")


def test_alg_none_is_rejected(idp: Any) -> None:
    token = jwt.encode(idp.claims(), "", algorithm="none", headers={"kid": "rsa-1"})
    rejects(verifier(idp), token, "algorithm 'none' is not accepted")
    rejects(verifier(idp), token + "c2ln", "algorithm 'none' is not accepted")  # with a "signature"


@pytest.mark.parametrize("as_secret", ["pem", "jwk"])
def test_hs256_with_public_key_as_secret_is_rejected(idp: Any, as_secret: str) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the RSA public key."""
    if as_secret == "pem":
        secret = idp.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        secret = idp.jwks_path.read_bytes()
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(idp.claims()).encode())
    sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    rejects(verifier(idp), head + "." + b64(sig), "algorithm 'HS256' is not accepted")


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RSA-OAEP", "XX999"])
def test_symmetric_or_unknown_algorithms_cannot_be_configured(idp: Any, alg: str) -> None:
    with pytest.raises(ConfigurationError, match=f"'{alg}' is not accepted"):
        verifier(idp, algorithms=["RS256", alg])


def test_algorithm_not_in_settings(idp: Any, ec_key: Any) -> None:
    idp.publish(idp.public_jwk(idp.key, "rsa-1"), idp.public_jwk(ec_key, "ec-1"))
    v = verifier(idp, algorithms=["RS256"])
    token = idp.token(key=ec_key, kid="ec-1", alg="ES256")
    rejects(v, token, r"'ES256' is not accepted \(accepted: RS256\)")


def test_key_must_fit_the_algorithm(idp: Any, ec_key: Any) -> None:
    # The JWK says RS256 only: an RS512 token with the right key is refused.
    idp.publish(idp.public_jwk(idp.key, "rsa-1", alg="RS256"))
    v = verifier(idp, algorithms=["RS256", "RS512", "ES256"])
    rejects(v, idp.token(alg="RS512"), "key 'rsa-1' of the identity provider cannot verify RS512")
    # An EC token pointing at the RSA key's kid.
    rejects(v, idp.token(key=ec_key, alg="ES256"), "cannot verify ES256")


def test_rsa_key_without_alg_verifies_ps256(idp: Any) -> None:
    v = verifier(idp, algorithms=["PS256"])
    assert v.verify(idp.token(alg="PS256")).username == "alice"


def test_token_without_kid(idp: Any, other_rsa_key: Any) -> None:
    v = verifier(idp)
    assert v.verify(idp.token(kid=None)).username == "alice"  # one key: it is the one
    idp.publish(idp.public_jwk(idp.key, "rsa-1"), idp.public_jwk(other_rsa_key, "rsa-2"))
    rejects(v, idp.token(kid=None), r"no key id \(kid\).*no single RS256 key")


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
def test_unusable_jwks_members_are_skipped(idp: Any, other_rsa_key: Any) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    idp.publish(
        idp.public_jwk(idp.key, "enc", use="enc"),
        idp.public_jwk(idp.key, "wrap", key_ops=["wrapKey"]),
        idp.public_jwk(weak, "weak"),
        {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not an object",
        idp.public_jwk(other_rsa_key, "good"),
    )
    v = verifier(idp)
    rejects(v, idp.token(kid="enc"), "unknown key id")
    rejects(v, idp.token(kid="wrap"), "unknown key id")
    rejects(v, idp.token(key=weak, kid="weak"), "unknown key id")
    rejects(v, idp.token(kid="oct"), "unknown key id")
    assert v.verify(idp.token(key=other_rsa_key, kid="good"))


def test_private_key_material_in_jwks_is_dropped(
    idp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    private = RSAAlgorithm.to_jwk(idp.key, as_dict=True)
    del private["key_ops"]  # ["sign"]: such a key would be skipped, rightly
    idp.publish({**private, "kid": "rsa-1"})
    with caplog.at_level(logging.WARNING):
        assert verifier(idp).verify(idp.token()).username == "alice"
    assert "private key material" in caplog.text


# -- the JWKS file ------------------------------------------------------------------


def test_jwks_file_rotation(idp: Any, other_rsa_key: Any) -> None:
    v = verifier(idp)
    old = idp.token()
    assert v.verify(old)
    idp.publish(idp.public_jwk(other_rsa_key, "rsa-2"))
    assert v.verify(idp.token(key=other_rsa_key, kid="rsa-2")).username == "alice"
    rejects(v, old, "unknown key id.*'rsa-1'")  # the retired key is gone


def test_jwks_file_rewritten_in_place(idp: Any, other_rsa_key: Any) -> None:
    v = verifier(idp)
    assert v.verify(idp.token())
    idp.jwks_path.write_bytes(idp.jwks_bytes(idp.public_jwk(other_rsa_key, "rsa-1")))
    rejects(v, idp.token(), "bad signature")


def test_jwks_file_missing_or_broken_fails_closed(idp: Any, tmp_path: Path) -> None:
    v = verifier(idp)
    assert v.verify(idp.token())
    idp.jwks_path.write_text("{not json")
    rejects(v, idp.token(), "cannot read the identity provider's keys")
    idp.jwks_path.write_text('{"kid": "x"}')
    rejects(v, idp.token(), "cannot read the identity provider's keys")
    idp.jwks_path.unlink()
    rejects(v, idp.token(), "cannot read the identity provider's keys")
    idp.publish(idp.public_jwk(idp.key, "rsa-1"))
    assert v.verify(idp.token())


def test_construction_does_no_io(idp: Any, tmp_path: Path) -> None:
    missing = tmp_path / "later.json"
    v = verifier(idp, jwks_file=missing)  # the file need not exist yet
    assert v.enabled
    rejects(v, idp.token(), "cannot read the identity provider's keys")
    missing.write_bytes(idp.jwks_path.read_bytes())
    assert v.verify(idp.token())


# -- configuration ----------------------------------------------------------------


def test_disabled_without_issuer() -> None:
    for settings_ in (OidcSettings(), OidcSettings(issuer="")):
        v = OidcVerifier(settings_)
        assert not v.enabled
        with pytest.raises(Unauthenticated, match="not configured"):
            v.verify("eyJ.eyJ.sig")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"jwks_file": None}, "neither oidc.jwks_file nor oidc.jwks_url"),
        ({"jwks_url": "https://idp/certs"}, "only one of"),
        ({"jwks_file": None, "jwks_url": "http://idp.example.org/certs"}, "must be an https"),
        ({"jwks_file": None, "jwks_url": "file:///etc/jwks.json"}, "must be an https"),
        ({"jwks_file": None, "jwks_url": "https:///certs"}, "must be an https"),
        ({"algorithms": []}, "oidc.algorithms is empty"),
        ({"username_claim": ""}, "username_claim is empty"),
    ],
)
def test_configuration_errors(idp: Any, overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        verifier(idp, **overrides)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/c", "http://localhost/c", "http://[::1]/c"])
def test_plain_http_allowed_to_loopback(idp: Any, url: str) -> None:
    assert verifier(idp, jwks_file=None, jwks_url=url).enabled


# -- malformed input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "eyJhbGciOiJSUzI1NiJ9.e30",
        "e30.e30.e30.e30.e30",  # JWE-like
        "x" * 20_000,
        "ünïcödé.ü.ü",
    ],
)
def test_malformed(idp: Any, token: str) -> None:
    rejects(verifier(idp), token, "malformed token")


def test_malformed_headers(idp: Any) -> None:
    v = verifier(idp)
    rejects(v, forge({"kid": "rsa-1"}, {}), "no algorithm")
    rejects(v, forge({"alg": 256, "kid": "rsa-1"}, {}), "no algorithm")
    rejects(v, forge({"alg": "RS256", "kid": 5}, {}), "malformed token")
    rejects(v, forge({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}, {}), "malformed token")
    crit = {"alg": "RS256", "kid": "rsa-1", "crit": ["b64"], "b64": False}
    detached = b64(json.dumps(crit).encode()) + ".." + b64(b"sig")  # RFC 7797 detached form
    rejects(v, detached, "critical header extensions are not supported")


def test_payload_must_be_a_json_object(idp: Any) -> None:
    v = verifier(idp)
    head = b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}).encode())
    for payload in (b"[1, 2]", b"not json", b'{"exp": NaN}', b"\xff\xfe"):
        signing_input = f"{head}.{b64(payload)}"
        sig = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), idp.key)
        rejects(v, f"{signing_input}.{b64(sig)}", "malformed token: the payload is not")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_fuzz_text_only_ever_raises_unauthenticated(idp: Any, token: str) -> None:
    with pytest.raises(Unauthenticated):
        verifier(idp).verify(token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(
            ["iss", "aud", "exp", "nbf", "iat", "preferred_username", "groups", "sub", "x"]
        ),
        json_values,
        max_size=6,
    )
)
def test_fuzz_signed_claims(idp: Any, overrides: dict[str, Any]) -> None:
    token = idp.token(**overrides)
    try:
        ident = verifier(idp).verify(token)
    except Unauthenticated as exc:
        assert exc.__cause__ is None
    else:
        assert isinstance(ident.username, str)
        assert all(isinstance(r, Role) for r in ident.tenant_roles.values())
