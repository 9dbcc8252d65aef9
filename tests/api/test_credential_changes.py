"""Credential changes on the app ``create_app`` builds, on SQLite and PostgreSQL.

The real wiring (accounts, sessions, the login guard, bearer authentication);
only the clock is frozen and mail goes to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from keel._clock import FrozenClock
from keel.accounts import NO_ORIGIN, AccountService
from keel.api.app import create_app
from keel.auth.models import AuthSession
from keel.auth.sessions import SessionService
from keel.db import Database, migrate
from keel.settings import Settings

from ._serve import serve_in_process

PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "a brand new long passphrase 3"


@dataclass
class Stack:
    http: httpx.AsyncClient
    accounts: AccountService
    clock: FrozenClock
    mail_file: Path
    database: Database
    sessions: SessionService

    async def links(self, kind: str, to: str) -> list[str]:
        outbox = self.accounts.outbox
        assert outbox is not None
        await outbox.drain()
        lines = self.mail_file.read_text().splitlines() if self.mail_file.exists() else []
        tokens = []
        for message in map(json.loads, lines):
            if message["kind"] == kind and message["to"] == to:
                line = next(x for x in message["body"].splitlines() if "#token=" in x)
                tokens.append(line.rsplit("#token=", 1)[1])
        return tokens

    async def user(self, email: str) -> str:
        """Register and verify ``email``; its user id."""
        response = await self.http.post(
            "/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 202, response.text
        [token] = await self.links("verify_email", email)
        verified = await self.http.post("/auth/verify-email", json={"token": token})
        assert verified.status_code == 200, verified.text
        return (await self.accounts.authenticate(email, PASSWORD, NO_ORIGIN)).user_id

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.http.post("/auth/login", json={"email": email, "password": password})


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
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    async with serve_in_process(app) as http:
        accounts = app.state.keel.service(AccountService)
        assert isinstance(accounts, AccountService)
        sessions = app.state.keel.service(SessionService)
        assert isinstance(sessions, SessionService)
        yield Stack(
            http, accounts, clock, tmp_path / "mail.jsonl", app.state.keel.database, sessions
        )
        outbox = accounts.outbox
        assert outbox is not None
        await outbox.drain()


async def test_admin_session_revocation_kills_pending_links(stack: Stack) -> None:
    user_id = await stack.user("owner@example.com")
    await stack.accounts.update_profile(
        user_id, NO_ORIGIN, email="thief@example.net", current_password=PASSWORD
    )
    [stolen] = await stack.links("verify_email", "thief@example.net")
    forgot = await stack.http.post("/auth/password/forgot", json={"email": "owner@example.com"})
    assert forgot.status_code == 202
    [reset] = await stack.links("password_reset", "owner@example.com")
    await stack.accounts.create_admin("root@example.com", PASSWORD)
    admin: dict[str, Any] = (await stack.login("root@example.com")).json()
    stack.clock.advance(5)
    revoked = await stack.http.post(
        f"/admin/users/{user_id}/sessions:revoke", headers=_bearer(admin["access_token"])
    )
    assert revoked.status_code == 200, revoked.text
    refused = await stack.http.post("/auth/verify-email", json={"token": stolen})
    assert refused.status_code == 400
    reset_refused = await stack.http.post(
        "/auth/password/reset", json={"token": reset, "new_password": NEW_PASSWORD}
    )
    assert reset_refused.status_code == 400
    assert (await stack.login("owner@example.com")).status_code == 200


class PausingHasher:
    """The app's hasher's ``verify``; once armed, one verification waits for ``release``."""

    def __init__(self, verify: Callable[[str, str], Awaitable[bool]]) -> None:
        self.inner_verify = verify
        self.armed = False
        self.checked = asyncio.Event()
        self.release = asyncio.Event()

    async def verify(self, password_hash: str, password: str) -> bool:
        result = await self.inner_verify(password_hash, password)
        if self.armed:
            self.armed = False
            self.checked.set()
            await self.release.wait()
        return result

    @classmethod
    def installed(cls, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> PausingHasher:
        """Pause the app's one hasher (every account area holds that same object)."""
        hasher = stack.accounts.hasher
        pausing = cls(hasher.verify)
        monkeypatch.setattr(hasher, "verify", pausing.verify)
        return pausing


async def _live_sessions(database: Database, user_id: str) -> int:
    async with database.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(AuthSession)
            .where(AuthSession.user_id == uuid.UUID(user_id), AuthSession.revoked_at.is_(None))
        )
    return int(count or 0)


async def test_a_login_checked_before_a_reset_commits_starts_no_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await stack.user("racer@example.com")
    forgot = await stack.http.post("/auth/password/forgot", json={"email": "racer@example.com"})
    assert forgot.status_code == 202
    [reset] = await stack.links("password_reset", "racer@example.com")
    hasher = PausingHasher.installed(stack, monkeypatch)
    hasher.armed = True
    # The login's password check passes, then waits: the reset commits in between.
    login = asyncio.create_task(stack.login("racer@example.com"))
    await hasher.checked.wait()
    stack.clock.advance(2)
    done = await stack.http.post(
        "/auth/password/reset", json={"token": reset, "new_password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    hasher.release.set()
    answer = await login
    assert answer.status_code == 401, answer.text
    assert await _live_sessions(stack.database, user_id) == 0
    # The new password logs in as usual.
    assert (await stack.login("racer@example.com", NEW_PASSWORD)).status_code == 200


async def test_a_login_checked_before_a_password_change_commits_starts_no_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await stack.user("changer@example.com")
    first: dict[str, Any] = (await stack.login("changer@example.com")).json()
    hasher = PausingHasher.installed(stack, monkeypatch)
    hasher.armed = True
    login = asyncio.create_task(stack.login("changer@example.com"))
    await hasher.checked.wait()
    stack.clock.advance(2)
    changed = await stack.http.post(
        "/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=_bearer(first["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    hasher.release.set()
    answer = await login
    assert answer.status_code == 401, answer.text
    assert await _live_sessions(stack.database, user_id) == 1  # the changer's own session


async def test_logins_racing_a_reset_leave_no_session_of_the_old_password(stack: Stack) -> None:
    user_id = await stack.user("crowd@example.com")
    forgot = await stack.http.post("/auth/password/forgot", json={"email": "crowd@example.com"})
    assert forgot.status_code == 202
    [reset] = await stack.links("password_reset", "crowd@example.com")
    stack.clock.advance(2)
    logins = [stack.login("crowd@example.com") for _ in range(8)]
    done = stack.http.post(
        "/auth/password/reset", json={"token": reset, "new_password": NEW_PASSWORD}
    )
    *answers, reset_answer = await asyncio.gather(*logins, done)
    assert reset_answer.status_code == 200, reset_answer.text
    assert {answer.status_code for answer in answers} <= {200, 401}
    # Whichever logins won their race, none of the old password's sessions outlives the reset.
    assert await _live_sessions(stack.database, user_id) == 0


class MeetingSessions:
    """The app's session start: each login's transaction waits, after its insert, for the other."""

    def __init__(self, start: Callable[..., Awaitable[str]], logins: int) -> None:
        self.inner_start = start
        self.logins = logins
        self.started = 0
        self.all_inserted = asyncio.Event()

    async def start(self, uow: Any, **kwargs: Any) -> str:
        token: str = await self.inner_start(uow, **kwargs)
        self.started += 1
        if self.started == self.logins:
            self.all_inserted.set()
        # On SQLite the second insert waits for the first commit: do not wait for ever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_inserted.wait(), 1.0)
        return token


async def test_two_logins_of_one_account_in_step_both_start_a_session(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await stack.user("busy@example.com")
    # The accounts hold the app's SessionService itself: its start is the one they call.
    monkeypatch.setattr(stack.sessions, "start", MeetingSessions(stack.sessions.start, 2).start)
    # Both sessions are inserted before either login re-reads the account under its lock.
    answers = await asyncio.gather(*(stack.login("busy@example.com") for _ in range(2)))
    assert [answer.status_code for answer in answers] == [200, 200]
    assert await _live_sessions(stack.database, user_id) == 2
