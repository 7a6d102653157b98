from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from virtuai.auth import hash_token, looks_like_api_token, new_token
from virtuai.auth.tokens import TOKEN_RE


def test_new_token_has_prefix_and_256_bits() -> None:
    token = new_token()
    assert token.startswith("vai_")
    assert TOKEN_RE.match(token)
    # 43 base64url characters carry 258 bits >= 256.
    assert len(token) == len("vai_") + 43
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token.removeprefix("vai_"))


def test_new_tokens_are_unique() -> None:
    tokens = {new_token() for _ in range(10_000)}
    assert len(tokens) == 10_000


def test_hash_is_deterministic_sha256_hex() -> None:
    token = new_token()
    digest = hash_token(token)
    assert digest == hash_token(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_token(new_token()) != digest
    # Known SHA-256 vector: the empty string.
    assert hash_token("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(st.text())
def test_hash_of_any_text_is_64_hex(value: str) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", hash_token(value))


def test_api_token_or_jwt() -> None:
    assert looks_like_api_token(new_token())
    assert not looks_like_api_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    assert not looks_like_api_token("")
    assert not looks_like_api_token("VAI_abc")
