"""POST /auth/password/change, /forgot and /reset over HTTP: SEC-08, SEC-12, SEC-15, SEC-25..27.

Session hooks and the login guard are recording stand-ins (``_passwords_app``);
the database is real SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from keel._clock import FrozenClock
from keel.api.passwords import FORGOT_ACCEPTED
from keel.settings import Settings

from ._accounts_app import STRONG, AccountsApp, audit_rows, running, table_dump
from ._passwords_app import PasswordsApp, build_passwords_app, reset_token

SettingsFactory = Callable[..., Settings]
NEW = "another long passphrase 9 ways"


@pytest.fixture
def settings(settings_factory: SettingsFactory, database_url: str) -> Settings:
    return settings_factory(database_url=database_url, public_url="https://app.keel.example")


@pytest.fixture
def deny_revoked() -> bool:
    return True


@pytest.fixture
def built(
    settings: Settings, tmp_path: Path, clock: FrozenClock, deny_revoked: bool
) -> PasswordsApp:
    return build_passwords_app(
        settings, tmp_path / "mail.jsonl", clock=clock, deny_revoked=deny_revoked
    )


@pytest.fixture
def accounts(built: PasswordsApp) -> AccountsApp:
    return built.accounts


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _change(
    http: httpx.AsyncClient, token: str, current: str, new: str = NEW
) -> httpx.Response:
    return await http.post(
        "/auth/password/change",
        json={"current_password": current, "new_password": new},
        headers=_bearer(token),
    )


async def _me(http: httpx.AsyncClient, token: str) -> int:
    return (await http.get("/users/me", headers=_bearer(token))).status_code


async def _forgot(http: httpx.AsyncClient, email: str, **kw: object) -> httpx.Response:
    return await http.post("/auth/password/forgot", json={"email": email}, **kw)  # type: ignore[arg-type]


async def _reset(http: httpx.AsyncClient, token: str, new: str = NEW) -> httpx.Response:
    return await http.post("/auth/password/reset", json={"token": token, "new_password": new})


# --- SEC-08 -----------------------------------------------------------------------------------


async def test_sec_08_change_needs_a_session(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/auth/password/change", json={"current_password": STRONG, "new_password": NEW}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_sec_08_wrong_current_password(
    http: httpx.AsyncClient, accounts: AccountsApp, built: PasswordsApp
) -> None:
    token = await accounts.verified_user(http, "wrong@keel.example")
    response = await _change(http, token, "not my password at all")
    assert response.status_code == 400
    assert response.json()["code"] == "current_password_invalid"
    assert "not my password" not in response.text
    assert built.guard.failures["wrong@keel.example"] == 1
    [row] = await audit_rows(accounts.database, "authn_password_change_fail")
    assert row.request_id == response.headers["x-request-id"]
    assert row.source_ip == "127.0.0.1"
    assert built.sessions.revoke_calls == []
    assert await _me(http, token) == 200  # nothing changed


@pytest.mark.parametrize("deny_revoked", [False])  # only tokens_valid_after refuses old tokens
async def test_sec_08_change_ends_other_sessions_and_continues_this_one(
    http: httpx.AsyncClient, accounts: AccountsApp, built: PasswordsApp, clock: FrozenClock
) -> None:
    mine = await accounts.verified_user(http, "change@keel.example")
    login = await http.post(
        "/auth/login", json={"email": "change@keel.example", "password": STRONG}
    )
    other = login.json()["access_token"]
    [(user_id, my_session, _), (_, other_session, _)] = built.sessions.started
    clock.advance(1)
    response = await _change(http, mine, STRONG)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    # The other session is revoked, this one kept; every earlier token dies by the bump ...
    [call] = built.sessions.revoke_calls
    assert (call.user_id, call.reason, call.keep) == (user_id, "password_change", my_session)
    assert call.revoked == (other_session,)
    assert await _me(http, other) == 401
    assert await _me(http, mine) == 401
    # ... and the answer's token carries on in this session.
    assert await _me(http, body["access_token"]) == 200
    assert accounts.tokens.verify(body["access_token"]).session_id == my_session
    [row] = await audit_rows(accounts.database, "authn_password_change")
    assert (row.actor_id, row.target_id, row.result) == (user_id, user_id, "success")
    assert row.request_id == response.headers["x-request-id"]
    [notice] = [m for m in await accounts.mail() if m["kind"] == "password_changed"]
    assert notice["to"] == "change@keel.example"
    assert NEW not in notice["body"]
    assert STRONG not in notice["body"]
    old = await http.post("/auth/login", json={"email": "change@keel.example", "password": STRONG})
    assert old.status_code == 401
    new = await http.post("/auth/login", json={"email": "change@keel.example", "password": NEW})
    assert new.status_code == 200


async def test_sec_08_revoked_sessions_fail_at_once(
    http: httpx.AsyncClient, accounts: AccountsApp, built: PasswordsApp
) -> None:
    # Same second as the logins: tokens_valid_after alone would not refuse them.
    mine = await accounts.verified_user(http, "same-second@keel.example")
    login = await http.post(
        "/auth/login", json={"email": "same-second@keel.example", "password": STRONG}
    )
    other = login.json()["access_token"]
    response = await _change(http, mine, STRONG)
    assert response.status_code == 200
    assert built.sessions.revoked_batches == [[built.sessions.started[1][1]]]
    assert await _me(http, other) == 401
    assert await _me(http, response.json()["access_token"]) == 200


@pytest.mark.parametrize(
    "body",
    [
        {"current_password": STRONG},
        {"current_password": STRONG, "new_password": NEW, "keep_sessions": False},
        {"current_password": STRONG, "new_password": 12345678},
    ],
)
async def test_sec_48_change_body_is_strict(
    http: httpx.AsyncClient, accounts: AccountsApp, body: dict[str, object]
) -> None:
    token = await accounts.verified_user(http, "strict@keel.example")
    response = await http.post("/auth/password/change", json=body, headers=_bearer(token))
    assert response.status_code == 422


async def test_sec_08_weak_new_password_is_refused(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    token = await accounts.verified_user(http, "weak@keel.example")
    response = await _change(http, token, STRONG, "password")
    assert response.status_code == 422
    assert await _me(http, token) == 200


# --- SEC-12, SEC-25, SEC-26 -------------------------------------------------------------------


async def test_sec_12_forgot_answers_identically(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "known@keel.example")
    answers = [
        await _forgot(http, email)
        for email in ("known@keel.example", "unknown@keel.example", "not an address")
    ]
    assert {response.status_code for response in answers} == {202}
    assert {response.content for response in answers} == {
        json.dumps(FORGOT_ACCEPTED, separators=(",", ":")).encode()
    }
    headers = [set(response.headers) - {"x-request-id"} for response in answers]
    assert headers[0] == headers[1] == headers[2]
    resets = [m for m in await accounts.mail() if m["kind"] == "password_reset"]
    assert [m["to"] for m in resets] == ["known@keel.example"]


async def test_sec_26_link_host_is_the_configured_one(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "host@keel.example")
    response = await _forgot(
        http,
        "host@keel.example",
        headers={
            "host": "evil.example",
            "x-forwarded-host": "evil.example",
            "x-forwarded-proto": "http",
            "forwarded": "host=evil.example",
        },
    )
    assert response.status_code == 202
    base, _ = await reset_token(accounts, "host@keel.example")
    link = urlsplit(base)
    assert (link.scheme, link.netloc, link.path) == ("https", "app.keel.example", "/reset-password")
    [message] = [m for m in await accounts.mail() if m["kind"] == "password_reset"]
    assert "evil.example" not in message["body"]


async def test_sec_25_reset_token_shape_storage_and_single_use(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "once@keel.example")
    await _forgot(http, "once@keel.example")
    _, token = await reset_token(accounts, "once@keel.example")
    assert len(token) >= 43
    assert token not in await table_dump(accounts.database, "password_reset_tokens")
    assert (await _reset(http, token)).status_code == 200
    again = await _reset(http, token, "yet another passphrase here")
    assert again.status_code == 400
    assert again.json()["code"] == "reset_token_invalid"


async def test_sec_25_expired_after_an_hour(
    http: httpx.AsyncClient, accounts: AccountsApp, clock: FrozenClock
) -> None:
    await accounts.verified_user(http, "late@keel.example")
    await _forgot(http, "late@keel.example")
    _, token = await reset_token(accounts, "late@keel.example")
    clock.advance(61 * 60)
    response = await _reset(http, token)
    assert response.status_code == 400
    assert response.json()["code"] == "reset_token_invalid"


async def test_sec_25_older_token_dies_with_a_newer_request(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    await accounts.verified_user(http, "twice@keel.example")
    await _forgot(http, "twice@keel.example")
    _, older = await reset_token(accounts, "twice@keel.example")
    await _forgot(http, "twice@keel.example")
    _, newer = await reset_token(accounts, "twice@keel.example")
    assert (await _reset(http, older)).status_code == 400
    assert (await _reset(http, newer)).status_code == 200


async def test_sec_25_token_dies_with_a_password_change(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    access = await accounts.verified_user(http, "changed@keel.example")
    await _forgot(http, "changed@keel.example")
    _, token = await reset_token(accounts, "changed@keel.example")
    assert (await _change(http, access, STRONG)).status_code == 200
    assert (await _reset(http, token, "yet another passphrase here")).status_code == 400


# --- SEC-27, SEC-15 ---------------------------------------------------------------------------


async def test_sec_27_reset_revokes_notifies_and_does_not_log_in(
    http: httpx.AsyncClient, accounts: AccountsApp, built: PasswordsApp, clock: FrozenClock
) -> None:
    access = await accounts.verified_user(http, "reset@keel.example")
    [(user_id, session_id, _)] = built.sessions.started
    await _forgot(http, "reset@keel.example")
    _, token = await reset_token(accounts, "reset@keel.example")
    clock.advance(1)
    response = await _reset(http, token)
    assert response.status_code == 200
    assert response.json() == {"status": "reset"}
    assert "token" not in response.text
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    [call] = built.sessions.revoke_calls
    assert (call.user_id, call.reason, call.keep, call.revoked) == (
        user_id,
        "password_reset",
        None,
        (session_id,),
    )
    assert await _me(http, access) == 401
    [notice] = [m for m in await accounts.mail() if m["kind"] == "password_changed"]
    assert notice["to"] == "reset@keel.example"
    [row] = await audit_rows(accounts.database, "authn_password_change")
    assert json.loads(row.details)["via"] == "reset"
    login = await http.post("/auth/login", json={"email": "reset@keel.example", "password": NEW})
    assert login.status_code == 200


async def test_sec_15_a_locked_account_can_reset_and_log_in(
    http: httpx.AsyncClient, accounts: AccountsApp, built: PasswordsApp
) -> None:
    await accounts.verified_user(http, "locked@keel.example")
    for _ in range(3):
        failed = await http.post(
            "/auth/login", json={"email": "locked@keel.example", "password": "a wrong guess"}
        )
        assert failed.status_code == 401
    locked = await http.post(
        "/auth/login", json={"email": "locked@keel.example", "password": STRONG}
    )
    assert locked.status_code == 429
    assert "retry-after" in locked.headers
    assert (await _forgot(http, "locked@keel.example")).status_code == 202
    _, token = await reset_token(accounts, "locked@keel.example")
    assert (await _reset(http, token)).status_code == 200
    assert ("clear", "locked@keel.example", None) in built.guard.calls
    login = await http.post("/auth/login", json={"email": "locked@keel.example", "password": NEW})
    assert login.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"token": "x" * 43},
        {"token": "x" * 43, "new_password": NEW, "email": "a@keel.example"},
        {"token": "x" * 129, "new_password": NEW},
    ],
)
async def test_sec_48_reset_body_is_strict(
    http: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert (await http.post("/auth/password/reset", json=body)).status_code == 422
