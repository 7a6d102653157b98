from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.users import (
    MembershipOut,
    MembershipSet,
    TokenCreated,
    UserCreate,
    UserCreated,
    UserOut,
    UserTokenCreate,
)
from virtuai.domain.tenancy import Role
from virtuai.services import accounts
from virtuai.services import users as service
from virtuai.services.access import Caller
from virtuai.services.identity import load_user
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import UserRow

router = APIRouter(prefix="/api/v1", tags=["users"])


def user_to_api(user: UserRow, caller: Caller | None = None) -> UserOut:
    """``caller`` (not an administrator, not the user) sees only the tenants it shares."""
    everything = caller is None or caller.is_admin or caller.user_id == user.id
    return UserOut(
        name=user.name,
        is_admin=user.is_admin if everything else False,
        source=user.source,
        tenants=sorted(
            (
                MembershipOut(tenant=m.tenant.name, role=m.role)
                for m in user.memberships
                if everything or (caller is not None and caller.can_see(m.tenant.name))
            ),
            key=lambda m: m.tenant,
        ),
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


@router.get("/whoami", tags=["users"])
def whoami(caller: CallerDep, context: Context) -> UserOut:
    with read_transaction(context.sessions) as session:
        return user_to_api(load_user(session, caller.user_id))


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, caller: CallerDep, context: Context) -> UserCreated:
    with transaction(context.sessions) as session:
        user, token = service.create_user(
            session,
            caller,
            body.name,
            body.tenant,
            Role(body.role),
            body.admin,
            context.clock.now(),
        )
        return UserCreated(user=user_to_api(user, caller), token=token)


@router.get("/users")
def list_users(caller: CallerDep, context: Context) -> list[UserOut]:
    with read_transaction(context.sessions) as session:
        return [user_to_api(u) for u in service.list_users(session, caller)]


@router.put("/users/{name}/membership")
def set_membership(name: str, body: MembershipSet, caller: CallerDep, context: Context) -> UserOut:
    with transaction(context.sessions) as session:
        return user_to_api(
            service.set_membership(session, caller, name, body.tenant, Role(body.role)), caller
        )


@router.delete("/users/{name}/membership/{tenant}")
def remove_membership(name: str, tenant: str, caller: CallerDep, context: Context) -> UserOut:
    """Take a user out of a tenant (its owners, or administrators)."""
    with transaction(context.sessions) as session:
        return user_to_api(service.remove_membership(session, caller, name, tenant), caller)


@router.post("/users/{name}/disable")
def disable_user(name: str, caller: CallerDep, context: Context) -> UserOut:
    """It can no longer authenticate; its running work goes on (administrators)."""
    with transaction(context.sessions) as session:
        user = accounts.set_user_disabled(session, caller, name, True, context.clock.now())
        return user_to_api(load_user(session, user.id), caller)


@router.post("/users/{name}/enable")
def enable_user(name: str, caller: CallerDep, context: Context) -> UserOut:
    with transaction(context.sessions) as session:
        user = accounts.set_user_disabled(session, caller, name, False, context.clock.now())
        return user_to_api(load_user(session, user.id), caller)


@router.delete("/users/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(name: str, caller: CallerDep, context: Context) -> None:
    """409 while it has live work; with history, its rows stay for accounting."""
    with transaction(context.sessions) as session:
        accounts.delete_user(session, caller, name, context.clock.now())


@router.post("/users/{name}/tokens", status_code=status.HTTP_201_CREATED)
def new_token(
    name: str,
    caller: CallerDep,
    context: Context,
    body: Annotated[UserTokenCreate | None, Body()] = None,
) -> TokenCreated:
    with transaction(context.sessions) as session:
        return TokenCreated(token=service.new_token_for(session, caller, name, context.clock.now()))
