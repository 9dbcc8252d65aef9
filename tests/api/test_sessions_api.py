"""Sessions over HTTP on the app ``create_app`` builds: refresh, logout, listing, revoking.

Every app here is the real wiring (accounts, sessions, bearer authentication
against the shared user state); only the clock is frozen and mail goes to a file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from keel._clock import FrozenClock
from keel.accounts import AccountService
from keel.api.app import create_app
from keel.db import Database, migrate
from keel.settings import Settings

from ._serve import serve_in_process

PASSWORD = "correct horse battery staple 42"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Stack:
    http: httpx.AsyncClient
    accounts: AccountService
    clock: FrozenClock
    mail_file: Path
    database: Database

    async def mail(self, kind: str) -> list[dict[str, Any]]:
        outbox = self.accounts.outbox
        assert outbox is not None
        await outbox.drain()
        lines = self.mail_file.read_text().splitlines() if self.mail_file.exists() else []
        return [m for m in map(json.loads, lines) if m["kind"] == kind]

    async def user(self, email: str) -> None:
        response = await self.http.post(
            "/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 202, response.text

    async def login(self, email: str, **headers: str) -> dict[str, Any]:
        response = await self.http.post(
            "/auth/login", json={"email": email, "password": PASSWORD}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def refresh(self, token: str) -> httpx.Response:
        return await self.http.post("/auth/refresh", json={"refresh_token": token})

    async def me(self, access: str) -> httpx.Response:
        return await self.http.get("/users/me", headers=_bearer(access))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def stack(settings_factory: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Stack]:
    settings = settings_factory(
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
        refresh_grace_seconds=2.0,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    async with serve_in_process(app) as http:
        accounts = app.state.keel.service(AccountService)
        assert isinstance(accounts, AccountService)
        yield Stack(http, accounts, clock, tmp_path / "mail.jsonl", app.state.keel.database)
        outbox = accounts.outbox
        assert outbox is not None
        await outbox.drain()


async def test_login_returns_a_refresh_token_and_refresh_rotates_it(stack: Stack) -> None:
    await stack.user("ann@example.com")
    login = await stack.login("ann@example.com")
    assert set(login) == {"access_token", "token_type", "expires_in", "refresh_token"}
    response = await stack.refresh(login["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # SEC-58
    body = response.json()
    assert body["refresh_token"] != login["refresh_token"]
    assert (await stack.me(body["access_token"])).status_code == 200


async def test_sec_38_sec_39_replay_over_http_kills_the_family(stack: Stack) -> None:
    await stack.user("ben@example.com")
    login = await stack.login("ben@example.com")
    rotated = (await stack.refresh(login["refresh_token"])).json()
    stack.clock.advance(3)  # past the 2 s grace window
    replay = await stack.refresh(login["refresh_token"])
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_refresh_token"
    assert (await stack.refresh(rotated["refresh_token"])).status_code == 401
    # The family's access tokens stop at once (deny-listed session), the old and the new.
    assert (await stack.me(rotated["access_token"])).status_code == 401
    assert (await stack.me(login["access_token"])).status_code == 401


async def test_sec_36_logout_stops_the_access_token_at_once(stack: Stack) -> None:
    await stack.user("cy@example.com")
    login = await stack.login("cy@example.com")
    assert (await stack.me(login["access_token"])).status_code == 200
    response = await stack.http.post("/auth/logout", headers=_bearer(login["access_token"]))
    assert response.status_code == 204
    assert (await stack.me(login["access_token"])).status_code == 401
    assert (await stack.refresh(login["refresh_token"])).status_code == 401


async def test_read_me_needs_no_database_round_trip_once_warm(stack: Stack) -> None:
    await stack.user("hot@example.com")
    login = await stack.login("hot@example.com")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = stack.database.engine.sync_engine
    first = await stack.me(login["access_token"])
    assert first.status_code == 200
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            again = await stack.me(login["access_token"])
            assert again.json() == first.json()
            assert again.headers["cache-control"] == "no-store"
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    # A change is seen on the next read, and a deleted account is not let in by a stale copy.
    renamed = await stack.http.patch(
        "/users/me", json={"display_name": "Renamed"}, headers=_bearer(login["access_token"])
    )
    assert renamed.status_code == 200
    assert (await stack.me(login["access_token"])).json()["display_name"] == "Renamed"
    deleted = await stack.http.request(
        "DELETE", "/users/me", json={"password": PASSWORD}, headers=_bearer(login["access_token"])
    )
    assert deleted.status_code == 204
    assert (await stack.me(login["access_token"])).status_code == 401


async def test_sec_42_list_revoke_and_admin_revoke(stack: Stack) -> None:
    await stack.user("dee@example.com")
    phone = await stack.login("dee@example.com", **{"User-Agent": "phone"})
    stack.clock.advance(1)
    laptop = await stack.login("dee@example.com", **{"User-Agent": "laptop"})
    listed = await stack.http.get("/sessions", headers=_bearer(laptop["access_token"]))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert [s["user_agent"] for s in sessions] == ["phone", "laptop"]
    assert [s["current"] for s in sessions] == [False, True]
    phone_id = sessions[0]["id"]
    gone = await stack.http.delete(f"/sessions/{phone_id}", headers=_bearer(laptop["access_token"]))
    assert gone.status_code == 204
    assert (await stack.refresh(phone["refresh_token"])).status_code == 401
    assert (await stack.me(phone["access_token"])).status_code == 401
    assert (await stack.me(laptop["access_token"])).status_code == 200

    await stack.accounts.create_admin("root@example.com", PASSWORD)
    admin = await stack.login("root@example.com")
    user_id = (await stack.me(laptop["access_token"])).json()["id"]
    revoked = await stack.http.post(
        f"/admin/users/{user_id}/sessions:revoke", headers=_bearer(admin["access_token"])
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": 1}
    assert (await stack.refresh(laptop["refresh_token"])).status_code == 401
    assert (await stack.me(laptop["access_token"])).status_code == 401
    # Not an admin: 403, and nothing happens.
    other = await stack.login("root@example.com")
    refused = await stack.http.post(
        f"/admin/users/{user_id}/sessions:revoke", headers=_bearer(laptop["access_token"])
    )
    assert refused.status_code == 401  # the laptop's token is dead already
    assert (await stack.me(other["access_token"])).status_code == 200


async def test_sec_47_another_users_session_is_404(stack: Stack) -> None:
    await stack.user("eve@example.com")
    await stack.user("fay@example.com")
    eve = await stack.login("eve@example.com")
    fay = await stack.login("fay@example.com")
    fays = (await stack.http.get("/sessions", headers=_bearer(fay["access_token"]))).json()
    [fay_session] = fays["sessions"]
    for target in (fay_session["id"], "00000000-0000-0000-0000-000000000000", "nope"):
        response = await stack.http.delete(
            f"/sessions/{target}", headers=_bearer(eve["access_token"])
        )
        assert response.status_code == 404
        assert fay_session["id"] not in response.text
    assert (await stack.refresh(fay["refresh_token"])).status_code == 200


async def test_refresh_token_grant_on_the_token_endpoint(stack: Stack) -> None:
    await stack.user("gus@example.com")
    login = await stack.http.post(
        "/auth/token",
        content="grant_type=password&username=gus%40example.com&password="
        + PASSWORD.replace(" ", "+"),
        headers=FORM,
    )
    assert login.status_code == 200, login.text
    first = login.json()
    refreshed = await stack.http.post(
        "/auth/token",
        content=f"grant_type=refresh_token&refresh_token={first['refresh_token']}",
        headers=FORM,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["cache-control"] == "no-store"
    body = refreshed.json()
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != first["refresh_token"]
    narrowed = await stack.http.post(
        "/auth/token",
        content=f"grant_type=refresh_token&refresh_token={body['refresh_token']}&scope=admin",
        headers=FORM,
    )
    assert narrowed.status_code == 400
    assert narrowed.json()["error"] == "invalid_scope"
    bad = await stack.http.post(
        "/auth/token", content="grant_type=refresh_token&refresh_token=" + "A" * 43, headers=FORM
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_grant"
    missing = await stack.http.post("/auth/token", content="grant_type=refresh_token", headers=FORM)
    assert missing.json()["error"] == "invalid_request"


async def test_session_routes_need_a_user_token(stack: Stack) -> None:
    for method, path in (
        ("POST", "/auth/logout"),
        ("GET", "/sessions"),
        ("DELETE", "/sessions/00000000-0000-0000-0000-000000000000"),
    ):
        response = await stack.http.request(method, path)
        assert response.status_code == 401
    bad = await stack.http.post("/auth/refresh", json={"refresh_token": "x", "extra": 1})
    assert bad.status_code == 422


NEW_PASSWORD = "a brand new passphrase for keel 7"


async def test_sec_08_password_change_keeps_this_session_and_ends_the_others(
    stack: Stack,
) -> None:
    await stack.user("hal@example.com")
    phone = await stack.login("hal@example.com")
    stack.clock.advance(1)
    laptop = await stack.login("hal@example.com")
    stack.clock.advance(1)
    wrong = await stack.http.post(
        "/auth/password/change",
        json={"current_password": "not the password at all 1", "new_password": NEW_PASSWORD},
        headers=_bearer(laptop["access_token"]),
    )
    assert wrong.status_code == 400
    assert (await stack.refresh(phone["refresh_token"])).status_code == 200  # nothing changed
    phone = {**phone, **(await stack.refresh(phone["refresh_token"])).json()}

    changed = await stack.http.post(
        "/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=_bearer(laptop["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["cache-control"] == "no-store"
    fresh = changed.json()["access_token"]
    # The other session is gone, refresh and access token alike.
    assert (await stack.refresh(phone["refresh_token"])).status_code == 401
    assert (await stack.me(phone["access_token"])).status_code == 401
    # This one goes on: the fresh access token works, and its refresh token still rotates.
    assert (await stack.me(fresh)).status_code == 200
    assert (await stack.refresh(laptop["refresh_token"])).status_code == 200
    assert await stack.mail("password_changed")
    login = await stack.http.post(
        "/auth/login", json={"email": "hal@example.com", "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_sec_27_reset_ends_every_session_and_does_not_log_in(stack: Stack) -> None:
    await stack.user("ivy@example.com")
    session = await stack.login("ivy@example.com")
    forgot = await stack.http.post("/auth/password/forgot", json={"email": "ivy@example.com"})
    assert forgot.status_code == 202
    [mail] = await stack.mail("password_reset")
    link = next(line for line in mail["body"].splitlines() if "#token=" in line)
    token = link.rsplit("#token=", 1)[1]
    stack.clock.advance(1)
    reset = await stack.http.post(
        "/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"status": "reset"}
    assert (await stack.refresh(session["refresh_token"])).status_code == 401
    assert (await stack.me(session["access_token"])).status_code == 401
    assert await stack.mail("password_changed")
    again = await stack.http.post(
        "/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD + "x"}
    )
    assert again.status_code == 400


async def test_sec_36_admin_disable_and_role_change_take_effect_on_the_next_request(
    stack: Stack,
) -> None:
    await stack.accounts.create_admin("boss@example.com", PASSWORD)
    boss = await stack.login("boss@example.com")
    await stack.accounts.create_admin("deputy@example.com", PASSWORD)
    deputy = await stack.login("deputy@example.com")
    assert (
        await stack.http.get("/admin/audit", headers=_bearer(deputy["access_token"]))
    ).status_code == 200
    deputy_id = (await stack.me(deputy["access_token"])).json()["id"]

    demoted = await stack.http.patch(
        f"/admin/users/{deputy_id}", json={"roles": ["user"]}, headers=_bearer(boss["access_token"])
    )
    assert demoted.status_code == 200, demoted.text
    # The deputy's earlier token lost "admin" at once.
    assert (
        await stack.http.get("/admin/audit", headers=_bearer(deputy["access_token"]))
    ).status_code == 403
    assert (await stack.me(deputy["access_token"])).status_code == 200

    disabled = await stack.http.patch(
        f"/admin/users/{deputy_id}", json={"active": False}, headers=_bearer(boss["access_token"])
    )
    assert disabled.status_code == 200, disabled.text
    assert (await stack.me(deputy["access_token"])).status_code == 401
    assert (await stack.refresh(deputy["refresh_token"])).status_code == 401
