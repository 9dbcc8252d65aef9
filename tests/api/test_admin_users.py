"""GET/PATCH /admin/users/{id}: admin only (SEC-46/47), strict bodies (SEC-48), audited changes.

Session hooks and the login guard are recording stand-ins (``_passwords_app``);
the database is real SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from keel._clock import FrozenClock
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, audit_rows, running
from ._passwords_app import PasswordsApp, build_passwords_app

SettingsFactory = Callable[..., Settings]
ADMIN_EMAIL = "root@keel.example"
VIEW_FIELDS = {"id", "email", "roles", "active", "email_verified", "created_at", "updated_at"}


@pytest.fixture
def built(
    settings_factory: SettingsFactory, database_url: str, tmp_path: Path, clock: FrozenClock
) -> PasswordsApp:
    settings = settings_factory(database_url=database_url, public_url="https://app.keel.example")
    return build_passwords_app(settings, tmp_path / "mail.jsonl", clock=clock)


@pytest.fixture
def accounts(built: PasswordsApp) -> AccountsApp:
    return built.accounts


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, accounts: AccountsApp) -> tuple[str, str]:
    """The admin's id and an access token with the admin scope."""
    view = await accounts.service.create_admin(ADMIN_EMAIL, STRONG)
    token = await _login(http, ADMIN_EMAIL)
    return view.id, token


async def _login(http: httpx.AsyncClient, email: str) -> str:
    response = await http.post("/auth/login", json={"email": email, "password": STRONG})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _member(http: httpx.AsyncClient, accounts: AccountsApp, email: str) -> tuple[str, str]:
    token = await accounts.verified_user(http, email)
    me = await http.get("/users/me", headers=_bearer(token))
    return str(me.json()["id"]), token


async def test_sec_46_anonymous_and_non_admin_are_refused(
    http: httpx.AsyncClient, accounts: AccountsApp, admin: tuple[str, str]
) -> None:
    admin_id, _ = admin
    user_id, token = await _member(http, accounts, "member@keel.example")
    for method, body in (("GET", None), ("PATCH", {"active": False})):
        anonymous = await http.request(method, f"/admin/users/{admin_id}", json=body)
        assert anonymous.status_code == 401
        forbidden = await http.request(
            method, f"/admin/users/{admin_id}", json=body, headers=_bearer(token)
        )
        assert forbidden.status_code == 403
        assert ADMIN_EMAIL not in forbidden.text
    denials = await audit_rows(accounts.database, "authz_fail")
    assert [row.actor_id for row in denials] == [user_id, user_id]
    state = (await http.get("/users/me", headers=_bearer(await _login(http, ADMIN_EMAIL)))).json()
    assert state["roles"] == ["admin", "user"]


async def test_read_user_is_the_admin_view_and_audited(
    http: httpx.AsyncClient, accounts: AccountsApp, admin: tuple[str, str]
) -> None:
    admin_id, token = admin
    user_id, _ = await _member(http, accounts, "read@keel.example")
    response = await http.get(f"/admin/users/{user_id}", headers=_bearer(token))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == VIEW_FIELDS
    assert (body["id"], body["email"], body["roles"], body["active"], body["email_verified"]) == (
        user_id,
        "read@keel.example",
        ["user"],
        True,
        True,
    )
    [row] = await audit_rows(accounts.database, "authz_admin")
    assert (row.actor_id, row.target_id) == (admin_id, user_id)
    assert json.loads(row.details) == {"operation": "user_read"}
    assert row.request_id == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "user_id",
    [pytest.param(str(uuid.uuid4()), id="unknown-uuid"), "not-a-uuid", "x" * 300, "1 OR 1=1"],
)
async def test_sec_47_unknown_or_malformed_ids_are_404(
    http: httpx.AsyncClient, admin: tuple[str, str], user_id: str
) -> None:
    _, token = admin
    assert (await http.get(f"/admin/users/{user_id}", headers=_bearer(token))).status_code == 404
    patched = await http.patch(
        f"/admin/users/{user_id}", json={"active": False}, headers=_bearer(token)
    )
    assert patched.status_code == 404
    assert patched.json()["code"] == "user_not_found"


async def test_disabling_a_user_ends_their_tokens_and_sessions(
    http: httpx.AsyncClient,
    accounts: AccountsApp,
    built: PasswordsApp,
    admin: tuple[str, str],
) -> None:
    admin_id, token = admin
    user_id, user_token = await _member(http, accounts, "disable@keel.example")
    assert (await http.get("/users/me", headers=_bearer(user_token))).status_code == 200
    response = await http.patch(
        f"/admin/users/{user_id}", json={"active": False}, headers=_bearer(token)
    )
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert (await http.get("/users/me", headers=_bearer(user_token))).status_code == 401
    [call] = built.sessions.revoke_calls
    assert (call.user_id, call.reason) == (user_id, "disabled")
    login = await http.post(
        "/auth/login", json={"email": "disable@keel.example", "password": STRONG}
    )
    assert login.status_code == 401
    [row] = await audit_rows(accounts.database, "user_updated")
    assert (row.actor_id, row.target_id, row.result) == (admin_id, user_id, "success")
    enabled = await http.patch(
        f"/admin/users/{user_id}", json={"active": True}, headers=_bearer(token)
    )
    assert enabled.json()["active"] is True
    assert (await _login(http, "disable@keel.example")) != user_token


async def test_granting_and_removing_admin_takes_effect_at_once(
    http: httpx.AsyncClient, accounts: AccountsApp, admin: tuple[str, str]
) -> None:
    admin_id, token = admin
    user_id, _ = await _member(http, accounts, "promote@keel.example")
    granted = await http.patch(
        f"/admin/users/{user_id}", json={"roles": ["user", "admin"]}, headers=_bearer(token)
    )
    assert granted.status_code == 200
    assert granted.json()["roles"] == ["admin", "user"]
    promoted = await _login(http, "promote@keel.example")
    assert (
        await http.get(f"/admin/users/{admin_id}", headers=_bearer(promoted))
    ).status_code == 200
    removed = await http.patch(
        f"/admin/users/{user_id}", json={"roles": ["user"]}, headers=_bearer(token)
    )
    assert removed.json()["roles"] == ["user"]
    # The same token, still unexpired, no longer carries the admin scope.
    refused = await http.get(f"/admin/users/{admin_id}", headers=_bearer(promoted))
    assert refused.status_code == 403
    changes = await audit_rows(accounts.database, "authz_change")
    assert [json.loads(row.details)["roles"] for row in changes] == [["admin", "user"], ["user"]]
    assert {row.actor_id for row in changes} == {admin_id}


async def test_an_admin_cannot_lock_themselves_out(
    http: httpx.AsyncClient, accounts: AccountsApp, admin: tuple[str, str]
) -> None:
    admin_id, token = admin
    bodies: list[dict[str, object]] = [{"active": False}, {"roles": ["user"]}, {"roles": []}]
    for body in bodies:
        response = await http.patch(f"/admin/users/{admin_id}", json=body, headers=_bearer(token))
        assert response.status_code == 409
        assert response.json()["code"] == "own_admin_access"
    assert (await http.get(f"/admin/users/{admin_id}", headers=_bearer(token))).status_code == 200
    failures = [
        row
        for action in ("authz_change", "user_updated")
        for row in await audit_rows(accounts.database, action)
    ]
    assert all(row.result == "failure" for row in failures)
    assert len(failures) == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "validation_failed"),
        ({"active": "false"}, "validation_failed"),
        ({"active": True, "email": "x@keel.example"}, "validation_failed"),
        ({"roles": "admin"}, "validation_failed"),
        ({"roles": ["superuser"]}, "role_unknown"),
        ({"password_hash": "x"}, "validation_failed"),
    ],
)
async def test_sec_48_patch_body_is_strict(
    http: httpx.AsyncClient,
    accounts: AccountsApp,
    admin: tuple[str, str],
    body: dict[str, object],
    code: str,
) -> None:
    _, token = admin
    user_id, _ = await _member(http, accounts, "strict@keel.example")
    response = await http.patch(f"/admin/users/{user_id}", json=body, headers=_bearer(token))
    assert response.status_code == 422
    assert response.json()["code"] == code
