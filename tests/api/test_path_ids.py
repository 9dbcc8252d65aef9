"""Ids in paths are canonicalised once, at the edge, on the app ``create_app`` builds.

A UUID written in upper case, in braces or as a ``urn:uuid:`` finds the same
row in the database as its canonical form; the deny-list, the cache and the
audit trail must then use that same canonical text, or a revoked session's
access token lives on. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.accounts import AccountService
from keel.api.app import create_app
from keel.db import Database, migrate
from keel.settings import Settings

from ._accounts_app import audit_rows
from ._serve import serve_in_process

PASSWORD = "correct horse battery staple 42"
ADMIN_EMAIL = "root@keel.example"

FORMS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "braces": lambda sid: "{" + sid + "}",
    "urn": lambda sid: "urn:uuid:" + sid,
    "no_hyphens": lambda sid: sid.replace("-", ""),
    "urn_upper_braces": lambda sid: "urn:uuid:{" + sid.upper() + "}",
}


class Stack:
    def __init__(self, http: httpx.AsyncClient, accounts: AccountService, db: Database) -> None:
        self.http, self.accounts, self.database = http, accounts, db

    async def login(self, email: str) -> dict[str, Any]:
        response = await self.http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def user(self, email: str) -> dict[str, Any]:
        response = await self.http.post(
            "/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 202, response.text
        return await self.login(email)

    async def get(self, path: str, token: str) -> httpx.Response:
        return await self.http.get(path, headers=_bearer(token))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def stack(
    settings_factory: Callable[..., Settings], database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    settings = settings_factory(
        database_url=database_url,
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings)
    async with serve_in_process(app) as http:
        accounts = app.state.keel.service(AccountService)
        assert isinstance(accounts, AccountService)
        yield Stack(http, accounts, app.state.keel.database)
        if accounts.outbox is not None:
            await accounts.outbox.drain()


async def _session_ids(stack: Stack, token: str) -> list[str]:
    response = await stack.get("/sessions", token)
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["sessions"]]


@pytest.mark.parametrize("form", sorted(FORMS))
async def test_sec_36_revoking_a_session_by_a_non_canonical_id_stops_its_access_token(
    stack: Stack, form: str
) -> None:
    laptop = await stack.user("ann@example.com")
    phone = await stack.login("ann@example.com")
    current = await stack.get("/sessions", phone["access_token"])
    [phone_id] = [s["id"] for s in current.json()["sessions"] if s["current"]]
    assert (await stack.get("/users/me", phone["access_token"])).status_code == 200

    gone = await stack.http.delete(
        f"/sessions/{FORMS[form](phone_id)}", headers=_bearer(laptop["access_token"])
    )
    assert gone.status_code == 204, gone.text

    assert (await stack.get("/users/me", phone["access_token"])).status_code == 401
    assert (await stack.get("/users/me", laptop["access_token"])).status_code == 200
    assert phone_id not in await _session_ids(stack, laptop["access_token"])
    [logout] = await audit_rows(stack.database, "session_logout")
    assert (logout.target_type, logout.target_id) == ("session", phone_id)


@pytest.mark.parametrize("raw", ["not-a-uuid", "0" * 33, "{" + "0" * 32, "%00", "x" * 64])
async def test_a_malformed_session_id_is_404(stack: Stack, raw: str) -> None:
    login = await stack.user("bo@example.com")
    response = await stack.http.delete(f"/sessions/{raw}", headers=_bearer(login["access_token"]))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert (await stack.get("/users/me", login["access_token"])).status_code == 200


async def test_admin_routes_canonicalise_the_user_id_in_the_answer_and_the_audit_trail(
    stack: Stack,
) -> None:
    admin_id = (await stack.accounts.create_admin(ADMIN_EMAIL, PASSWORD)).id
    admin = (await stack.login(ADMIN_EMAIL))["access_token"]
    member = await stack.user("cy@example.com")
    user_id = (await stack.get("/users/me", member["access_token"])).json()["id"]
    shouted = user_id.upper()

    read = await stack.get(f"/admin/users/{shouted}", admin)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == user_id
    changed = await stack.http.patch(
        f"/admin/users/{{{shouted}}}", json={"roles": ["user"]}, headers=_bearer(admin)
    )
    assert changed.status_code == 200, changed.text
    revoked = await stack.http.post(
        f"/admin/users/urn:uuid:{shouted}/sessions:revoke", headers=_bearer(admin)
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": 1}
    assert (await stack.get("/users/me", member["access_token"])).status_code == 401

    targets = {
        row.target_id
        for row in await audit_rows(stack.database)
        if row.actor_id == admin_id and row.target_type == "user" and row.target_id != admin_id
    }
    assert targets == {user_id}


async def test_sec_46_a_malformed_id_is_refused_as_unauthenticated_or_forbidden_first(
    stack: Stack,
) -> None:
    member = (await stack.user("di@example.com"))["access_token"]
    assert (await stack.http.delete("/sessions/nope")).status_code == 401
    for method, path in (
        ("GET", "/admin/users/nope"),
        ("PATCH", "/admin/users/nope"),
        ("POST", "/admin/users/nope/sessions:revoke"),
    ):
        assert (await stack.http.request(method, path)).status_code == 401, (method, path)
        refused = await stack.http.request(
            method, path, json={"active": False}, headers=_bearer(member)
        )
        assert refused.status_code == 403, (method, path)
