"""Operations behind the API.

They validate, authorise within the caller's tenants and record desired state.
"""
