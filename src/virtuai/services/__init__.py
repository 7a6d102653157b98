"""Operations behind the API: validate, authorise within the caller's tenants, record desired state."""
