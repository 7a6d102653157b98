"""API tokens: make (shown once), list (with last use), revoke (at once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.users import TokenCreate, TokenIssued, TokenOut
from virtuai.services import tokens as service
from virtuai.store.db import transaction

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, caller: CallerDep, context: Context) -> TokenIssued:
    """A token for yourself; ``expires`` is a lifetime (30d, 12h), null for none."""
    with transaction(context.sessions) as session:
        row, token = service.new_token(
            session, caller, body.name, body.expires, context.clock.now()
        )
        return TokenIssued(
            id=row.id,
            name=row.name,
            token=token,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )


@router.get("")
def list_tokens(
    caller: CallerDep,
    context: Context,
    user: Annotated[
        str | None, Query(max_length=128, description="another user's (administrators)")
    ] = None,
    all: Annotated[bool, Query(description="every user's tokens (administrators)")] = False,
) -> list[TokenOut]:
    with transaction(context.sessions) as session:
        return [
            TokenOut(
                id=row.id,
                name=row.name,
                user=owner,
                created_at=row.created_at,
                expires_at=row.expires_at,
                last_used_at=row.last_used_at,
                revoked_at=row.revoked_at,
            )
            for row, owner in service.list_tokens(session, caller, user, everyone=all)
        ]


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: TokenId, caller: CallerDep, context: Context) -> None:
    """Revoked at once: the next request with it answers 401."""
    with transaction(context.sessions) as session:
        service.revoke_token(session, caller, token_id, context.clock.now())
