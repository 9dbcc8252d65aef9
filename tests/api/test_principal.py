"""Guards: deny by default, one opaque 401, 403 without the scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from keel.api.app import create_app
from keel.api.principal import ADMIN_SCOPE, Principal, current_principal, require_scope
from keel.settings import Settings

from ._serve import HeaderAuthenticator, serve_in_process

SettingsFactory = Callable[..., Settings]


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/_t/admin-only")
    async def admin_only(
        principal: Annotated[Principal, Depends(require_scope(ADMIN_SCOPE))],
    ) -> dict[str, str]:
        return {"subject": principal.subject}

    return router


async def test_guarded_routes_deny_everyone_by_default(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory(), routers=[_router()])
    async with serve_in_process(app) as client:
        response = await client.get("/_t/admin-only", headers={"x-test-user": "alice admin"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthenticated"


async def test_scope_is_required(settings_factory: SettingsFactory) -> None:
    app = create_app(settings_factory(), routers=[_router()], authenticator=HeaderAuthenticator())
    async with serve_in_process(app) as client:
        anonymous = await client.get("/_t/admin-only")
        user = await client.get("/_t/admin-only", headers={"x-test-user": "bob user"})
        admin = await client.get("/_t/admin-only", headers={"x-test-user": "alice admin"})
    assert anonymous.status_code == 401
    assert user.status_code == 403
    assert user.json()["code"] == "forbidden"
    assert "www-authenticate" not in user.headers
    assert admin.status_code == 200
    assert admin.json() == {"subject": "alice"}


async def test_credentials_are_checked_once_per_request(settings_factory: SettingsFactory) -> None:
    class Counting(HeaderAuthenticator):
        calls = 0

        async def authenticate(self, request: Request) -> Principal | None:
            Counting.calls += 1
            return await super().authenticate(request)

    router = APIRouter()

    @router.get("/_t/twice")
    async def twice(
        first: Annotated[Principal, Depends(require_scope(ADMIN_SCOPE))],
        request: Request,
    ) -> dict[str, str]:
        again = await current_principal(request)  # a direct call after the dependency
        return {"first": first.subject, "again": again.subject}

    app = create_app(settings_factory(), routers=[router], authenticator=Counting())
    async with serve_in_process(app) as client:
        for expected in (1, 2):
            response = await client.get("/_t/twice", headers={"x-test-user": "alice admin"})
            assert response.json() == {"first": "alice", "again": "alice"}
            assert Counting.calls == expected
