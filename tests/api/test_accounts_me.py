"""GET/PATCH/DELETE /users/me: cached reads, address changes re-verified, deletion re-authenticated,
no mass assignment (SEC-48), declared fields only (SEC-49), no-store (SEC-58)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from keel._clock import FrozenClock
from keel.accounts import EmailVerificationToken, OutboxMessage, User
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, audit_rows, build_accounts_app, running, user_row

SettingsFactory = Callable[..., Settings]
FORBIDDEN_KEYS = re.compile(r"password|hash|secret|totp|recovery|refresh_token_hash", re.IGNORECASE)


@pytest.fixture
def changes() -> list[str]:
    return []


@pytest.fixture
def accounts(
    settings_factory: SettingsFactory,
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    changes: list[str],
) -> AccountsApp:
    async def changed(user_id: str) -> None:
        changes.append(user_id)

    settings = settings_factory(database_url=database_url, public_url="https://app.keel.example")
    return build_accounts_app(
        settings, tmp_path / "mail.jsonl", clock=clock, on_user_changed=changed
    )


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _user_id(accounts: AccountsApp, email_key: str) -> str:
    row = await user_row(accounts.database, email_key)
    assert row is not None
    return str(row.id)


async def test_read_me(http: httpx.AsyncClient, accounts: AccountsApp) -> None:
    assert (await http.get("/users/me")).status_code == 401
    token = await accounts.verified_user(http, "reader@keel.example", display_name="Reader Example")
    me = await http.get("/users/me", headers=_bearer(token))
    assert me.status_code == 200
    assert me.headers["cache-control"] == "no-store"
    body = me.json()
    assert set(body) == {
        "id",
        "email",
        "email_verified",
        "display_name",
        "roles",
        "created_at",
        "updated_at",
    }
    assert body["email"] == "reader@keel.example"
    assert body["email_verified"] is True
    assert body["display_name"] == "Reader Example"
    assert body["roles"] == ["user"]
    assert body["id"] == await _user_id(accounts, "reader@keel.example")
    assert body["created_at"].endswith("+00:00")


async def test_update_display_name(
    http: httpx.AsyncClient, accounts: AccountsApp, changes: list[str]
) -> None:
    token = await accounts.verified_user(http, "namer@keel.example")
    user_id = await _user_id(accounts, "namer@keel.example")
    await http.get("/users/me", headers=_bearer(token))  # fill the cache
    changes.clear()
    patched = await http.patch(
        "/users/me", json={"display_name": "  New Name  "}, headers=_bearer(token)
    )
    assert patched.status_code == 200
    assert patched.headers["cache-control"] == "no-store"
    assert patched.json()["display_name"] == "New Name"
    # The cached view was refreshed with the commit, and the listener told.
    assert (await http.get("/users/me", headers=_bearer(token))).json()[
        "display_name"
    ] == "New Name"
    assert changes == [user_id]
    cleared = await http.patch("/users/me", json={"display_name": None}, headers=_bearer(token))
    assert cleared.json()["display_name"] is None
    bad = await http.patch("/users/me", json={"display_name": "a\u202eb"}, headers=_bearer(token))
    assert bad.status_code == 422
    assert bad.json()["code"] == "display_name_invalid"
    empty = await http.patch("/users/me", json={}, headers=_bearer(token))
    assert empty.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"roles": ["admin"]},
        {"role": "admin"},
        {"is_admin": True},
        {"is_active": False},
        {"email_verified": False},
        {"password_hash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"},
        {"display_name": "ok", "roles": ["admin"]},
    ],
)
async def test_sec_48_no_mass_assignment(
    http: httpx.AsyncClient, accounts: AccountsApp, body: dict[str, Any]
) -> None:
    token = await accounts.verified_user(http, "mass@keel.example")
    before = await user_row(accounts.database, "mass@keel.example")
    response = await http.patch("/users/me", json=body, headers=_bearer(token))
    assert response.status_code == 422
    assert any(error["type"] == "extra_forbidden" for error in response.json()["errors"])
    after = await user_row(accounts.database, "mass@keel.example")
    assert before is not None
    assert after is not None
    assert (after.roles, after.is_active, after.email_verified_at, after.password_hash) == (
        before.roles,
        before.is_active,
        before.email_verified_at,
        before.password_hash,
    )
    assert after.display_name == before.display_name
    me = await http.get("/users/me", headers=_bearer(token))
    assert me.json()["roles"] == ["user"]


async def test_email_change_is_reverified_and_the_old_address_told(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    token = await accounts.verified_user(http, "old@keel.example")
    headers = _bearer(token)
    missing = await http.patch("/users/me", json={"email": "new@keel.example"}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["code"] == "current_password_required"
    wrong = await http.patch(
        "/users/me",
        json={"email": "new@keel.example", "current_password": "not the password at all"},
        headers=headers,
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "current_password_invalid"

    before = len(await accounts.mail())
    requested = await http.patch(
        "/users/me",
        json={"email": "New@keel.example", "current_password": STRONG},
        headers=headers,
    )
    assert requested.status_code == 200
    assert requested.json()["email"] == "old@keel.example"  # until the new one is confirmed
    sent = (await accounts.mail())[before:]
    assert {(m["to"], m["kind"]) for m in sent} == {
        ("old@keel.example", "email_change_requested"),
        ("New@keel.example", "verify_email"),
    }
    assert "#token=" not in next(m for m in sent if m["to"] == "old@keel.example")["body"]

    link = await accounts.last_token(to="New@keel.example")
    assert (await http.post("/auth/verify-email", json={"token": link})).status_code == 200
    me = await http.get("/users/me", headers=headers)
    assert me.json()["email"] == "New@keel.example"
    assert me.json()["email_verified"] is True
    new_login = await http.post(
        "/auth/login", json={"email": "new@keel.example", "password": STRONG}
    )
    assert new_login.status_code == 200
    old_login = await http.post(
        "/auth/login", json={"email": "old@keel.example", "password": STRONG}
    )
    assert old_login.status_code == 401


async def test_email_change_to_a_taken_address_reveals_nothing(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "taken@keel.example")
    token = await accounts.verified_user(http, "mover@keel.example")
    before = len(await accounts.mail())
    moved = await http.patch(
        "/users/me",
        json={"email": "taken@keel.example", "current_password": STRONG},
        headers=_bearer(token),
    )
    free = await http.patch(
        "/users/me",
        json={"email": "free@keel.example", "current_password": STRONG},
        headers=_bearer(token),
    )
    assert moved.status_code == free.status_code == 200
    sent = (await accounts.mail())[before:]
    to_taken = [m for m in sent if m["to"] == "taken@keel.example"]
    assert [m["kind"] for m in to_taken] == ["email_change_attempt"]
    assert "#token=" not in to_taken[0]["body"]


async def test_delete_me_needs_the_password_and_kills_tokens(
    http: httpx.AsyncClient, accounts: AccountsApp, changes: list[str]
) -> None:
    token = await accounts.verified_user(http, "leaver@keel.example")
    user_id = await _user_id(accounts, "leaver@keel.example")
    headers = _bearer(token)
    wrong = await http.request(
        "DELETE", "/users/me", json={"password": "not my password at all"}, headers=headers
    )
    assert wrong.status_code == 400
    assert (await http.get("/users/me", headers=headers)).status_code == 200
    missing = await http.request("DELETE", "/users/me", json={}, headers=headers)
    assert missing.status_code == 422

    mail_of_the_account = select(func.count()).where(OutboxMessage.user_id == user_id)
    async with accounts.database.unit_of_work() as uow:
        assert (await uow.session.execute(mail_of_the_account)).scalar_one() > 0

    changes.clear()
    deleted = await http.request("DELETE", "/users/me", json={"password": STRONG}, headers=headers)
    assert deleted.status_code == 204
    assert deleted.headers["cache-control"] == "no-store"
    assert changes == [user_id]
    assert (await http.get("/users/me", headers=headers)).status_code == 401
    assert await user_row(accounts.database, "leaver@keel.example") is None
    async with accounts.database.unit_of_work() as uow:
        tokens = select(func.count()).select_from(EmailVerificationToken)
        assert (await uow.session.execute(tokens)).scalar_one() == 0
        assert (await uow.session.execute(select(func.count()).select_from(User))).scalar_one() == 0
        # Its mail goes too, sent or not: no row keeps the address of an account that is gone.
        assert (await uow.session.execute(mail_of_the_account)).scalar_one() == 0
    login = await http.post(
        "/auth/login", json={"email": "leaver@keel.example", "password": STRONG}
    )
    assert login.status_code == 401
    rows = await audit_rows(accounts.database, "user_deleted")
    assert [(r.result, r.target_id) for r in rows] == [("failure", user_id), ("success", user_id)]


def _walk(value: object, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if FORBIDDEN_KEYS.search(str(key)):
                found.append(f"{path}.{key}")
            found.extend(_walk(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_walk(item, f"{path}[{index}]"))
    return found


async def test_sec_49_no_secret_fields_in_any_response(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    seen: list[tuple[str, object]] = []

    async def collect(response: httpx.Response) -> None:
        await response.aread()
        if response.headers.get("content-type", "").split(";")[0].endswith("json"):
            seen.append((f"{response.request.method} {response.request.url.path}", response.json()))

    http.event_hooks["response"].append(collect)
    token = await accounts.verified_user(http, "walker@keel.example", display_name="Walker")
    headers = _bearer(token)
    await http.get("/users/me", headers=headers)
    await http.patch("/users/me", json={"display_name": "Walked"}, headers=headers)
    await http.patch(
        "/users/me",
        json={"email": "w2@keel.example", "current_password": "wrong wrong wrong"},
        headers=headers,
    )
    await http.post("/auth/login", json={"email": "walker@keel.example", "password": "nope nope"})
    await http.post(
        "/auth/token",
        content=f"grant_type=password&username=walker%40keel.example&password={STRONG}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    await http.post("/auth/register", json={"email": "x@keel.example", "password": "short"})
    await http.request("DELETE", "/users/me", json={"password": "nope nope nope"}, headers=headers)
    assert len(seen) >= 9
    for where, body in seen:
        assert _walk(body) == [], where
