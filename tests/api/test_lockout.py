"""Brute-force limits end to end on the app ``create_app`` builds (SEC-13..SEC-16).

Requests come from chosen client addresses (the ASGI peer), so a test can be
"a stranger on ten machines" and "the owner at home" at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from keel._clock import FrozenClock
from keel.accounts import AccountService
from keel.api.app import create_app
from keel.audit.models import AuditEventRow
from keel.db import Database, migrate
from keel.settings import Settings

PASSWORD = "correct horse battery staple 42"
WRONG = "wrong horse battery staple 42"
OWNER_HOME = "198.51.100.7"


@dataclass
class Net:
    app: FastAPI
    clock: FrozenClock
    stack: AsyncExitStack
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def from_ip(self, ip: str) -> httpx.AsyncClient:
        if ip not in self.clients:
            transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
            self.clients[ip] = await self.stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
        return self.clients[ip]

    async def login(self, ip: str, email: str, password: str) -> httpx.Response:
        http = await self.from_ip(ip)
        return await http.post("/auth/login", json={"email": email, "password": password})

    async def audit(self, action: str) -> list[AuditEventRow]:
        database = self.app.state.keel.database
        assert isinstance(database, Database)
        async with database.unit_of_work() as uow:
            query = select(AuditEventRow).where(AuditEventRow.action == action)
            return list((await uow.session.scalars(query)).all())


@pytest.fixture
async def net(settings_factory: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Net]:
    settings = settings_factory(
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    async with AsyncExitStack() as stack, app.router.lifespan_context(app):
        yield Net(app, clock, stack)
        await stack.aclose()
        outbox = app.state.keel.service(AccountService).outbox
        await outbox.drain()


async def _register(net: Net, email: str) -> None:
    http = await net.from_ip(OWNER_HOME)
    response = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 202, response.text


async def test_sec_13_failures_from_many_ips_delay_the_account(net: Net) -> None:
    email = "victim@example.com"
    await _register(net, email)
    for n in range(10):
        response = await net.login(f"203.0.113.{n + 1}", email, WRONG)
        assert response.status_code == 401, response.text
    # The 11th attempt, from yet another address, with the CORRECT password: refused.
    refused = await net.login("203.0.113.99", email, PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "access_token" not in refused.text
    locks = await net.audit("authn_login_lock")
    assert locks
    assert locks[0].source_ip == "203.0.113.99"
    # The lock is temporary (SEC-15): after the delay the right password works ...
    net.clock.advance(int(refused.headers["retry-after"]) + 1)
    assert (await net.login("203.0.113.99", email, PASSWORD)).status_code == 200
    # ... and a success resets the count: one more failure does not lock again.
    assert (await net.login("203.0.113.50", email, WRONG)).status_code == 401
    assert (await net.login("203.0.113.51", email, PASSWORD)).status_code == 200


async def _verify(net: Net, tmp_path: Path, email: str) -> None:
    await net.app.state.keel.service(AccountService).outbox.drain()
    messages = [json.loads(line) for line in (tmp_path / "mail.jsonl").read_text().splitlines()]
    [mail] = [m for m in messages if m["kind"] == "verify_email" and m["to"] == email]
    link = next(line for line in mail["body"].splitlines() if "#token=" in line)
    http = await net.from_ip(OWNER_HOME)
    response = await http.post("/auth/verify-email", json={"token": link.rsplit("#token=", 1)[1]})
    assert response.status_code == 200, response.text


async def test_sec_13_a_stranger_cannot_lock_the_owner_out_of_their_usual_place(
    net: Net, tmp_path: Path
) -> None:
    email = "owner@example.com"
    await _register(net, email)
    await _verify(net, tmp_path, email)  # an unverified account's logins make no source known
    assert (await net.login(OWNER_HOME, email, PASSWORD)).status_code == 200
    for n in range(30):
        await net.login(f"203.0.113.{n + 1}", email, WRONG)
    # The stranger's next guess is refused without a password check ...
    assert (await net.login("203.0.113.200", email, PASSWORD)).status_code == 429
    # ... while the owner, at home, still logs in.
    assert (await net.login(OWNER_HOME, email, PASSWORD)).status_code == 200


async def test_sec_14_one_ip_hammering_random_accounts_gets_429(net: Net) -> None:
    statuses = []
    for _ in range(60):
        response = await net.login("192.0.2.66", f"{uuid.uuid4().hex}@example.com", WRONG)
        statuses.append(response.status_code)
    assert statuses[0] == 401
    assert statuses[-1] == 429
    last = await net.login("192.0.2.66", "anyone@example.com", WRONG)
    assert last.status_code == 429
    assert int(last.headers["retry-after"]) >= 1
    assert await net.audit("excess_rate_limit_exceeded")
    # Another address is not affected.
    assert (await net.login("192.0.2.67", "anyone@example.com", WRONG)).status_code == 401


async def test_sec_15_a_locked_account_can_still_reset_its_password(
    net: Net, tmp_path: Path
) -> None:
    email = "locked@example.com"
    await _register(net, email)
    for n in range(10):
        await net.login(f"203.0.113.{n + 1}", email, WRONG)
    assert (await net.login("203.0.113.77", email, PASSWORD)).status_code == 429
    http = await net.from_ip("203.0.113.77")
    forgot = await http.post("/auth/password/forgot", json={"email": email})
    assert forgot.status_code == 202
    outbox = net.app.state.keel.service(AccountService).outbox
    await outbox.drain()
    messages = [json.loads(line) for line in (tmp_path / "mail.jsonl").read_text().splitlines()]
    [reset_mail] = [m for m in messages if m["kind"] == "password_reset"]
    link = next(line for line in reset_mail["body"].splitlines() if "#token=" in line)
    new_password = "a new and unguessable passphrase 9"
    reset = await http.post(
        "/auth/password/reset",
        json={"token": link.rsplit("#token=", 1)[1], "new_password": new_password},
    )
    assert reset.status_code == 200, reset.text
    # The completed reset ends the lockout: the new password works at once, from anywhere.
    assert (await net.login("203.0.113.77", email, new_password)).status_code == 200
