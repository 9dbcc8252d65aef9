"""Admin routes over accounts: read one, enable/disable it, set its roles.

Routes (``admin`` scope only, SEC-46/47)::

    GET   /admin/users/{user_id}   the account as an admin sees it
    PATCH /admin/users/{user_id}   {"active"?: bool, "roles"?: [str]} → the same view

An unknown or malformed id is 404. The body is strict (unknown fields 422)
and needs at least one field; roles must be keel's or the application's
(``create_app(roles=...)``; 422). An admin cannot disable themselves or drop
their own ``admin`` role (409).
Disabling signs the account out everywhere; every read and change is
audited with the admin as the actor (``keel.accounts.admin``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.accounts import UserView
from keel.accounts.admin import AdminService
from keel.api.account_models import StrictBody
from keel.api.contract import LIMIT_KEY, ROLE, authenticated
from keel.api.ids import UserId
from keel.api.middleware import no_store
from keel.api.origin import origin_of
from keel.api.principal import Admin

__all__ = ["AdminUserResponse", "UpdateUserRequest", "build_admin_users_router"]

_ROLES_MAX: Final = 16
_ROLE_FIELD_MAX: Final = 64

Role = Annotated[
    str, Field(min_length=1, max_length=_ROLE_FIELD_MAX, json_schema_extra={LIMIT_KEY: ROLE})
]


class UpdateUserRequest(StrictBody):
    """Only activity and roles; the address, the password and the rest are never set here."""

    # At least one of them, not null (the validator below).
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["active"], "properties": {"active": {"type": "boolean"}}},
                {"required": ["roles"], "properties": {"roles": {"type": "array"}}},
            ]
        }
    )

    active: bool | None = None
    roles: Annotated[list[Role], Field(max_length=_ROLES_MAX)] | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateUserRequest:
        if self.active is None and self.roles is None:
            raise ValueError("give active or roles")
        return self


class AdminUserResponse(BaseModel):
    """An account as an admin sees it (declared fields only, SEC-49)."""

    id: str
    email: str
    roles: list[str]
    active: bool
    email_verified: bool
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, view: UserView) -> AdminUserResponse:
        return cls(
            id=view.id,
            email=view.email,
            roles=list(view.roles),
            active=view.is_active,
            email_verified=view.email_verified,
            created_at=view.created_at.isoformat(),
            updated_at=view.updated_at.isoformat(),
        )


def build_admin_users_router(admin_service: AdminService) -> APIRouter:
    """A fresh router with the admin user routes, served by ``admin_service``."""
    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(no_store)])

    @router.get("/users/{user_id}", response_model=AdminUserResponse, **authenticated(404))
    async def read_user(
        request: Request,
        admin: Admin,
        user_id: UserId,
    ) -> Any:
        """One account; the read is audited."""
        view = await admin_service.admin_view(
            admin.subject, user_id, origin_of(request), actor_type=admin.actor_type
        )
        return AdminUserResponse.of(view)

    @router.patch(
        "/users/{user_id}", response_model=AdminUserResponse, **authenticated(404, 409, 415, 422)
    )
    async def update_user(
        body: UpdateUserRequest,
        request: Request,
        admin: Admin,
        user_id: UserId,
    ) -> Any:
        """Enable or disable the account and/or replace its roles, in one change."""
        view = await admin_service.update_user(
            admin.subject,
            user_id,
            origin_of(request),
            active=body.active,
            roles=body.roles,
            actor_type=admin.actor_type,
        )
        return AdminUserResponse.of(view)

    return router
