"""Authentication: API tokens (stored hashed) and JWTs from an external OIDC provider."""
