"""Authentication: API tokens (stored hashed) and JWTs from an external OIDC provider."""

from virtuai.auth.identity import Identity
from virtuai.auth.oidc import OidcVerifier
from virtuai.auth.tokens import hash_token, looks_like_api_token, new_token

__all__ = ["Identity", "OidcVerifier", "hash_token", "looks_like_api_token", "new_token"]
