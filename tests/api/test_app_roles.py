"""An application's roles: declared with the scopes they grant, given by an admin, checked by scope.

The whole app (``create_app(roles=...)``) with keel's own bearer authentication:
a role given to an account grants its scopes to tokens issued afterwards, and
a role taken away stops granting them on the very next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends

from keel.accounts import AccountService, Role, RoleCatalog
from keel.api.app import create_app
from keel.api.principal import Principal, require_scope
from keel.db import migrate
from keel.settings import Settings

from ._serve import serve_in_process

PASSWORD = "correct horse battery staple 42"
MODERATOR = Role("moderator", frozenset({"notes:moderate"}), "may remove anyone's notes")

router = APIRouter()


@router.get("/moderation")
async def moderation(
    who: Annotated[Principal, Depends(require_scope("notes:moderate"))],
) -> dict[str, str]:
    return {"moderator": who.subject}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _login(http: httpx.AsyncClient, email: str) -> str:
    response = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_an_application_role_grants_its_scope_until_it_is_taken_away(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, routers=[router], roles=[MODERATOR])
    accounts: AccountService = app.state.keel.service(AccountService)
    async with serve_in_process(app) as http:
        await accounts.create_admin("root@keel.example", PASSWORD)
        admin = await _login(http, "root@keel.example")
        body = {"email": "mo@keel.example", "password": PASSWORD}
        assert (await http.post("/auth/register", json=body)).status_code == 202
        plain = await _login(http, "mo@keel.example")
        me = (await http.get("/users/me", headers=_bearer(plain))).json()
        assert (await http.get("/moderation", headers=_bearer(plain))).status_code == 403

        refused = await http.patch(
            f"/admin/users/{me['id']}", json={"roles": ["user", "wizard"]}, headers=_bearer(admin)
        )
        assert refused.status_code == 422
        given = await http.patch(
            f"/admin/users/{me['id']}",
            json={"roles": ["user", "moderator"]},
            headers=_bearer(admin),
        )
        assert given.status_code == 200, given.text
        moderator = await _login(http, "mo@keel.example")  # a token issued with the new role
        allowed = await http.get("/moderation", headers=_bearer(moderator))
        assert allowed.json() == {"moderator": me["id"]}

        taken = await http.patch(
            f"/admin/users/{me['id']}", json={"roles": ["user"]}, headers=_bearer(admin)
        )
        assert taken.status_code == 200
        assert (await http.get("/moderation", headers=_bearer(moderator))).status_code == 403
        assert (await http.get("/users/me", headers=_bearer(moderator))).status_code == 200


def test_the_catalog_expands_roles_and_keeps_keels_own() -> None:
    catalog = RoleCatalog([MODERATOR])
    assert catalog.names == {"user", "admin", "moderator"}
    assert catalog.scopes_for({"user", "moderator", "unknown"}) == {"user", "notes:moderate"}
    with pytest.raises(ValueError, match="defined twice"):
        RoleCatalog([Role("admin", frozenset({"everything"}))])
    with pytest.raises(ValueError, match="not a scope token"):
        Role("bad", frozenset({"two words"}))
