"""The accounts flows in the audit trail (SEC-64, SEC-67); no secret in a log or row (SEC-65)."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from keel._clock import FrozenClock
from keel._logging import JsonFormatter
from keel.settings import Settings

from ._accounts_app import (
    AccountsApp,
    audit_rows,
    build_accounts_app,
    running,
    table_dump,
    user_row,
)

SettingsFactory = Callable[..., Settings]
AGENT = "keel-audit-test/1.0"


@pytest.fixture
def settings(settings_factory: SettingsFactory, database_url: str) -> Settings:
    return settings_factory(database_url=database_url, public_url="https://app.keel.example")


@pytest.fixture
def accounts(settings: Settings, tmp_path: Path, clock: FrozenClock) -> AccountsApp:
    return build_accounts_app(settings, tmp_path / "mail.jsonl", clock=clock)


@pytest.fixture
async def http(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    async with running(accounts) as client:
        client.headers["user-agent"] = AGENT
        yield client


class _Audited:
    """Runs one action and returns the single audit row it added."""

    def __init__(self, accounts: AccountsApp) -> None:
        self.accounts = accounts

    async def one(self, action: str, response: httpx.Response, seen: int) -> dict[str, object]:
        rows = await audit_rows(self.accounts.database)
        new = rows[seen:]
        assert [row.action for row in new] == [action], [row.action for row in new]
        [row] = new
        assert row.source_ip == "127.0.0.1"
        assert row.user_agent == AGENT
        assert row.request_id == response.headers["x-request-id"]
        assert row.target_type == "user"
        assert row.occurred_at.tzinfo is UTC
        return {
            "result": row.result,
            "actor_type": row.actor_type,
            "actor_id": row.actor_id,
            "target_id": row.target_id,
            "details": row.details,
        }


async def test_sec_64_each_action_one_audit_row(
    http: httpx.AsyncClient, accounts: AccountsApp
) -> None:
    audited = _Audited(accounts)
    email, password = "audited@keel.example", "an audited passphrase 2026"

    seen = len(await audit_rows(accounts.database))
    response = await http.post("/auth/register", json={"email": email, "password": password})
    created = await audited.one("user_created", response, seen)
    row = await user_row(accounts.database, email)
    assert row is not None
    user_id = str(row.id)
    assert created == {
        "result": "success",
        "actor_type": "user",
        "actor_id": user_id,
        "target_id": user_id,
        "details": '{"roles":["user"],"via":"register"}',
    }

    seen += 1
    response = await http.post("/auth/register", json={"email": email, "password": password})
    again = await audited.one("user_created", response, seen)
    assert (again["result"], again["actor_type"], again["target_id"]) == (
        "failure",
        "anonymous",
        user_id,
    )
    assert "email_taken" in str(again["details"])

    seen += 1
    response = await http.post("/auth/login", json={"email": email, "password": password})
    unverified = await audited.one("authn_login_fail", response, seen)
    assert unverified["target_id"] == user_id
    assert '"reason":"email_unverified"' in str(unverified["details"])

    seen += 1
    token = await accounts.last_token(to=email)
    response = await http.post("/auth/verify-email", json={"token": token})
    verified = await audited.one("authn_email_verified", response, seen)
    assert (verified["result"], verified["actor_id"]) == ("success", user_id)

    seen += 1
    response = await http.post("/auth/verify-email", json={"token": token})
    reused = await audited.one("authn_email_verified", response, seen)
    assert reused["result"] == "failure"
    assert '"reason":"used"' in str(reused["details"])

    seen += 1
    response = await http.post("/auth/login", json={"email": email, "password": password})
    success = await audited.one("authn_login_success", response, seen)
    assert (success["result"], success["actor_type"], success["actor_id"]) == (
        "success",
        "user",
        user_id,
    )
    access = response.json()["access_token"]
    claims = accounts.tokens.verify(access)
    assert f'"jti":"{claims.jti}"' in str(success["details"])
    assert f'"session_id":"{claims.session_id}"' in str(success["details"])

    seen += 1
    response = await http.post("/auth/login", json={"email": "who@keel.example", "password": "x"})
    unknown = await audited.one("authn_login_fail", response, seen)
    assert (unknown["actor_type"], unknown["actor_id"], unknown["target_id"]) == (
        "anonymous",
        None,
        None,
    )
    assert '"reason":"unknown_user"' in str(unknown["details"])

    seen += 1
    response = await http.post(
        "/auth/token",
        content=f"grant_type=password&username={email}&password={password}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    await audited.one("authn_login_success", response, seen)

    headers = {"authorization": f"Bearer {access}"}
    seen += 1
    response = await http.patch("/users/me", json={"display_name": "Audited"}, headers=headers)
    updated = await audited.one("user_updated", response, seen)
    assert (updated["actor_id"], updated["target_id"]) == (user_id, user_id)
    assert updated["details"] == '{"fields":["display_name"]}'

    seen += 1
    response = await http.request(
        "DELETE", "/users/me", json={"password": password}, headers=headers
    )
    deleted = await audited.one("user_deleted", response, seen)
    assert (deleted["result"], deleted["actor_id"], deleted["target_id"]) == (
        "success",
        user_id,
        user_id,
    )


async def test_failed_mail_is_audited_never_silent(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file backend cannot write into a directory that does not exist: every attempt fails.
    accounts = build_accounts_app(settings, tmp_path / "no-such-dir" / "mail.jsonl")
    async with running(accounts) as http:
        with caplog.at_level(logging.WARNING, logger="keel.accounts.mail"):
            await http.post(
                "/auth/register",
                json={"email": "lost@keel.example", "password": "a long enough one 1"},
            )
            outbox = accounts.service.outbox
            assert outbox is not None
            await outbox.drain()
        row = await user_row(accounts.database, "lost@keel.example")
        assert row is not None
        [failure] = await audit_rows(accounts.database, "mail_send_fail")
        assert (failure.result, failure.actor_type) == ("failure", "system")
        assert (failure.target_type, failure.target_id) == ("user", str(row.id))
        assert '"attempts":3' in failure.details
        assert '"kind":"verify_email"' in failure.details
        assert [r.getMessage() for r in caplog.records].count("mail_send_error") == 3
        assert "mail_send_failed" in [r.getMessage() for r in caplog.records]


@pytest.fixture
def every_log_line() -> Iterator[io.StringIO]:
    """Everything any logger emits, at every level, formatted as keel formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    raw: list[str] = []

    class Raw(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(f"{record.getMessage()} {record.__dict__!r}")

    raw_handler = Raw(logging.DEBUG)
    root.addHandler(raw_handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.removeHandler(raw_handler)
        root.setLevel(old_level)
        stream.write("\n".join(raw))


async def test_sec_65_no_secret_in_logs_or_audit(
    http: httpx.AsyncClient, accounts: AccountsApp, every_log_line: io.StringIO
) -> None:
    password = "Canary-password-" + secrets.token_hex(12)
    new_password_attempt = "Canary-wrong-" + secrets.token_hex(12)
    email = "canary@keel.example"
    form = {"content-type": "application/x-www-form-urlencoded"}

    await http.post("/auth/register", json={"email": email, "password": password})
    link_token = await accounts.last_token(to=email)
    await http.post("/auth/verify-email", json={"token": link_token})
    await http.post("/auth/verify-email", json={"token": link_token})
    access = (await http.post("/auth/login", json={"email": email, "password": password})).json()[
        "access_token"
    ]
    await http.post("/auth/login", json={"email": email, "password": new_password_attempt})
    await http.post("/auth/login", json={"email": password, "password": password})
    await http.post(
        "/auth/token",
        content=f"grant_type=password&username={email}&password={password}".encode(),
        headers=form,
    )
    await http.post(
        "/auth/token",
        content=f"grant_type=password&username={email}&password={new_password_attempt}".encode(),
        headers=form,
    )
    headers = {"authorization": f"Bearer {access}"}
    await http.get("/users/me", headers=headers)
    await http.patch(
        "/users/me",
        json={"email": "canary2@keel.example", "current_password": new_password_attempt},
        headers=headers,
    )
    await http.patch(
        "/users/me",
        json={"email": "canary2@keel.example", "current_password": password},
        headers=headers,
    )
    change_token = await accounts.last_token(to="canary2@keel.example")
    await http.post("/auth/verify-email", json={"token": change_token})
    await http.post("/auth/register", json={"password": password})  # invalid: no email
    await http.request(
        "DELETE", "/users/me", json={"password": new_password_attempt}, headers=headers
    )
    await http.request("DELETE", "/users/me", json={"password": password}, headers=headers)

    canaries = {
        "password": password,
        "wrong password": new_password_attempt,
        "verification token": link_token,
        "change token": change_token,
        "access token": access,
        "access token signature": access.rsplit(".", 1)[1],
    }
    logs = every_log_line.getvalue()
    assert "http_request" in logs  # the capture works
    audit = await table_dump(accounts.database, "audit_events")
    assert "user_deleted" in audit
    for name, secret in canaries.items():
        assert secret not in logs, f"{name} in the logs"
        assert secret not in audit, f"{name} in the audit trail"
