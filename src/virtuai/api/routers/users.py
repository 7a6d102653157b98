from __future__ import annotations

from fastapi import APIRouter, status

from virtuai.api.deps import CallerDep, Context
from virtuai.api.schemas.users import (
    MembershipOut,
    MembershipSet,
    TokenCreated,
    UserCreate,
    UserCreated,
    UserOut,
)
from virtuai.domain.tenancy import Role
from virtuai.services import users as service
from virtuai.services.identity import load_user
from virtuai.store.db import read_transaction, transaction
from virtuai.store.models import UserRow

router = APIRouter(prefix="/api/v1", tags=["users"])


def user_to_api(user: UserRow) -> UserOut:
    return UserOut(
        name=user.name,
        is_admin=user.is_admin,
        source=user.source,
        tenants=sorted(
            (MembershipOut(tenant=m.tenant.name, role=m.role) for m in user.memberships),
            key=lambda m: m.tenant,
        ),
        created_at=user.created_at,
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
        return UserCreated(user=user_to_api(user), token=token)


@router.get("/users")
def list_users(caller: CallerDep, context: Context) -> list[UserOut]:
    with read_transaction(context.sessions) as session:
        return [user_to_api(u) for u in service.list_users(session, caller)]


@router.put("/users/{name}/membership")
def set_membership(name: str, body: MembershipSet, caller: CallerDep, context: Context) -> UserOut:
    with transaction(context.sessions) as session:
        return user_to_api(
            service.set_membership(session, caller, name, body.tenant, Role(body.role))
        )


@router.post("/users/{name}/tokens", status_code=status.HTTP_201_CREATED)
def new_token(name: str, caller: CallerDep, context: Context) -> TokenCreated:
    with transaction(context.sessions) as session:
        return TokenCreated(token=service.new_token_for(session, caller, name, context.clock.now()))
