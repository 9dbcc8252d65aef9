"""Limits on every password check and every authentication route, end to end (SEC-13, SEC-14).

The app is the one ``create_app`` builds, over the machine-shared state file
(the store without ``REDIS_URL``) and over the real Redis. Requests come from
chosen client addresses, IPv4 and IPv6, so a test can be "a /64 of attackers"
and "the owner at home" at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from keel._clock import FrozenClock
from keel.accounts import AccountService
from keel.api.app import create_app
from keel.audit import AuditEvent, ChainLink
from keel.audit._coalesce import Coalescer
from keel.audit.models import AuditEventRow
from keel.db import Database, migrate
from keel.errors import DatabaseUnavailable
from keel.settings import Settings

PASSWORD = "correct horse battery staple 42"
WRONG = "wrong horse battery staple 42"
OWNER_HOME = "198.51.100.7"
SettingsFactory = Callable[..., Settings]


def in_64(n: int) -> str:
    """The ``n``-th address of one attacker's /64."""
    return f"2001:db8:1:2::{n:x}"


@dataclass
class Net:
    app: FastAPI
    clock: FrozenClock
    stack: AsyncExitStack
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    async def from_ip(self, ip: str) -> httpx.AsyncClient:
        if ip not in self.clients:
            transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
            self.clients[ip] = await self.stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
        return self.clients[ip]

    async def post(self, ip: str, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await (await self.from_ip(ip)).post(path, json=body, **kw)

    async def login(self, ip: str, email: str, password: str) -> httpx.Response:
        return await self.post(ip, "/auth/login", {"email": email, "password": password})

    async def count(self, action: str) -> int:
        database = self.app.state.keel.database
        assert isinstance(database, Database)
        async with database.unit_of_work() as uow:
            query = select(func.count()).where(AuditEventRow.action == action)
            return int(await uow.session.scalar(query) or 0)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The machine-shared state file (no ``REDIS_URL``), or the real Redis in a namespace.

    These tests count exactly. A Redis call that outlasts the cache timeout is answered
    from the state file, that call only (the documented trade-off, tested on its own in
    ``tests/unit/cache/test_fallback_stall.py``), which moves a limit by one; the first
    connect on a loaded machine can take longer than the 0.25 s default, so Redis gets 2 s.
    """
    if request.param == "local":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "cache_namespace": request.getfixturevalue("redis_namespace"),
        "cache_timeout": 2.0,
    }


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def net(
    settings_factory: SettingsFactory,
    store_settings: dict[str, Any],
    overrides: dict[str, Any],
    tmp_path: Path,
    clock: FrozenClock,
) -> AsyncIterator[Net]:
    settings = settings_factory(
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
        require_verified_email=False,
        **store_settings,
        **overrides,
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, clock=clock)
    async with AsyncExitStack() as stack, app.router.lifespan_context(app):
        # Connected before the first request: no request races the store's first connect.
        await app.state.keel.supervisor.wait_warmups()
        yield Net(app, clock, stack)
        await stack.aclose()
        await app.state.keel.service(AccountService).outbox.drain()


async def register(net: Net, email: str) -> None:
    response = await net.post(OWNER_HOME, "/auth/register", {"email": email, "password": PASSWORD})
    assert response.status_code == 202, response.text


async def lock(net: Net, email: str) -> int:
    """Ten wrong passwords from ten IPv4 strangers: the account is locked; the lock's seconds."""
    for n in range(10):
        assert (await net.login(f"203.0.113.{n + 1}", email, WRONG)).status_code == 401
    refused = await net.login("203.0.113.99", email, WRONG)
    assert refused.status_code == 429, refused.text
    return int(refused.headers["retry-after"])


# SEC-13: an attempt is counted before its hash runs; a /64 is one source.


async def test_sec_13_a_burst_from_one_64_when_a_lock_ends_gets_one_password_check(
    net: Net,
) -> None:
    email = "burst@example.com"
    await register(net, email)
    net.clock.advance(await lock(net, email))
    evaluated_before = await net.count("authn_login_fail")
    responses = await asyncio.gather(*(net.login(in_64(n + 1), email, WRONG) for n in range(40)))
    evaluated = await net.count("authn_login_fail") - evaluated_before
    statuses = sorted(r.status_code for r in responses)
    # Past the threshold every failure locks again: one guess per lock, not forty.
    assert evaluated == 1, statuses
    assert statuses == [401] + [429] * 39


async def test_sec_14_one_64_is_one_client_and_a_mapped_ipv4_is_the_ipv4(net: Net) -> None:
    statuses = []
    for n in range(60):
        response = await net.login(in_64(n + 1), f"{uuid.uuid4().hex}@example.com", WRONG)
        statuses.append(response.status_code)
    # 50 attempts per client and window, whichever addresses of the /64 they come from.
    assert statuses == [401] * 50 + [429] * 10
    # The neighbouring /64 is another client.
    assert (await net.login("2001:db8:1:3::1", "anyone@example.com", WRONG)).status_code == 401
    for _ in range(50):
        await net.login("192.0.2.66", f"{uuid.uuid4().hex}@example.com", WRONG)
    mapped = await net.login("::ffff:192.0.2.66", "anyone@example.com", WRONG)
    assert mapped.status_code == 429


# Locks and failure counts fail closed: no store, no password check.


async def test_sec_13_without_its_store_a_password_check_is_refused_not_run_unlimited(
    settings_factory: SettingsFactory, tmp_path: Path, clock: FrozenClock
) -> None:
    # Nothing listens on port 1: Redis is down from the start.
    settings = settings_factory(
        redis_url="redis://127.0.0.1:1/0", require_verified_email=False, cache_timeout=0.2
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings, clock=clock)
    async with AsyncExitStack() as stack, app.router.lifespan_context(app):
        net = Net(app, clock, stack)
        for n in range(3):
            response = await net.login(f"203.0.113.{n + 1}", "anyone@example.com", WRONG)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "cache_unavailable"
        # No password was checked: no failed login to record.
        assert await net.count("authn_login_fail") == 0
        await stack.aclose()


# SEC-13: every password check goes through the login's limits, whichever route asks.


async def owner_token(net: Net, email: str) -> str:
    response = await net.login(OWNER_HOME, email, PASSWORD)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def check_password(net: Net, route: str, ip: str, email: str, password: str) -> int:
    """One password check through ``route`` from ``ip``; the answer's status."""
    http = await net.from_ip(ip)
    bearer = {"Authorization": f"Bearer {net.tokens[email]}"} if route != "login" else {}
    if route == "login":
        response = await http.post("/auth/login", json={"email": email, "password": password})
    elif route == "token":
        response = await http.post(
            "/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
    elif route == "email_change":
        body = {"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "current_password": password}
        response = await http.patch("/users/me", json=body, headers=bearer)
    elif route == "delete":
        response = await http.request(
            "DELETE", "/users/me", json={"password": password}, headers=bearer
        )
    else:
        body = {"current_password": password, "new_password": "another fine passphrase 77"}
        response = await http.post("/auth/password/change", json=body, headers=bearer)
    return response.status_code


@pytest.mark.parametrize("route", ["login", "token", "email_change", "delete", "password_change"])
async def test_sec_13_every_password_check_counts_and_locks_like_a_login(
    net: Net, route: str
) -> None:
    email = f"{route}@example.com"
    await register(net, email)
    net.tokens[email] = await owner_token(net, email)  # a stolen access token, used elsewhere
    for n in range(10):
        status = await check_password(net, route, f"203.0.113.{n + 1}", email, WRONG)
        assert status in {400, 401}, (n, status)
    # The account is locked for strangers: the right password is not even checked ...
    assert await check_password(net, route, "203.0.113.99", email, PASSWORD) == 429
    # ... on this route and on the login alike.
    assert (await net.login("203.0.113.98", email, PASSWORD)).status_code == 429
    assert await net.count("authn_login_lock") >= 2


# An attempt is counted whatever happens to its audit record.


def fail_audit_of(net: Net, *actions: str) -> list[str]:
    """From now on, recording an event of ``actions`` alone raises (as a commit past the request
    deadline does); the actions whose record was lost, in order."""
    trail = net.app.state.keel.audit
    lost: list[str] = []
    original = trail._alone

    async def append(events: Sequence[AuditEvent]) -> list[ChainLink]:
        for audit_event in events:
            if audit_event.action in actions:
                lost.append(audit_event.action)
                raise DatabaseUnavailable("audit append failed")
        return list(await asyncio.gather(*(original.submit(e) for e in events)))

    trail._alone = Coalescer(append)
    return lost


async def test_sec_13_a_failure_whose_audit_record_fails_is_still_counted(net: Net) -> None:
    email = "unaudited@example.com"
    await register(net, email)
    lost = fail_audit_of(net, "authn_login_fail", "authn_login_fail_max", "authn_login_lock")
    for n in range(10):
        response = await net.login(f"203.0.113.{n + 1}", email, WRONG)
        # The same answer as any wrong password: nothing about the audit failure leaks.
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_credentials"
    assert lost.count("authn_login_fail") == 10
    refused = await net.login("203.0.113.99", email, PASSWORD)
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert "authn_login_lock" in lost


# /auth/refresh: the refresh family's limits per client, and a rate per session.


async def refresh(net: Net, ip: str, token: str) -> httpx.Response:
    return await net.post(ip, "/auth/refresh", {"refresh_token": token})


async def test_sec_14_anonymous_refreshes_are_limited_per_client(net: Net) -> None:
    statuses = [(await refresh(net, "192.0.2.80", "x" * 43)).status_code for _ in range(60)]
    assert statuses == [401] * 50 + [429] * 10
    assert (await refresh(net, "192.0.2.81", "x" * 43)).status_code == 401


@pytest.mark.parametrize("endpoint", ["/auth/refresh", "/auth/token"])
async def test_sec_14_one_session_refreshes_at_most_its_rate(net: Net, endpoint: str) -> None:
    email = "refresher@example.com"
    await register(net, email)
    token = (await net.login(OWNER_HOME, email, PASSWORD)).json()["refresh_token"]
    statuses = []
    for n in range(12):
        # From a new address each time: the limit is the session's, not the client's.
        http = await net.from_ip(f"203.0.113.{n + 1}")
        if endpoint == "/auth/refresh":
            response = await http.post(endpoint, json={"refresh_token": token})
        else:
            form = {"grant_type": "refresh_token", "refresh_token": token}
            response = await http.post(endpoint, data=form)
        statuses.append(response.status_code)
        if response.status_code == 200:
            token = response.json()["refresh_token"]
    assert statuses == [200] * 10 + [429] * 2
    assert int(response.headers["retry-after"]) >= 1
    net.clock.advance(120)
    assert (await refresh(net, "203.0.113.50", token)).status_code == 200


# Separate budgets per route family; a known user from a known source passes a spent global one.


@pytest.mark.parametrize("overrides", [{"rate_limit_global": 20}])
async def test_sec_14_a_spent_login_budget_spares_other_routes_and_known_users(
    net: Net, tmp_path: Path
) -> None:
    email = "regular@example.com"
    await register(net, email)
    # Verified: only a verified account's logins make their source known.
    await net.app.state.keel.service(AccountService).outbox.drain()
    (link,) = [m for m in mails_to(tmp_path / "mail.jsonl", email) if m["kind"] == "verify_email"]
    verified = await net.post(OWNER_HOME, "/auth/verify-email", {"token": reset_token(link)})
    assert verified.status_code == 200, verified.text
    assert (await net.login(OWNER_HOME, email, PASSWORD)).status_code == 200
    # A population of strangers, each under its own per-IP limit, spends the login budget.
    for n in range(19):
        await net.login(f"203.0.113.{n + 1}", f"{uuid.uuid4().hex}@example.com", WRONG)
    assert (await net.login("203.0.113.100", email, WRONG)).status_code == 429
    # The owner, from where they always log in, is not held back by strangers' attempts ...
    assert (await net.login(OWNER_HOME, email, PASSWORD)).status_code == 200
    # ... and the other routes have budgets of their own.
    other = "192.0.2.200"
    body = {"email": "newcomer@example.com", "password": PASSWORD}
    assert (await net.post(other, "/auth/register", body)).status_code == 202
    forgot = await net.post(other, "/auth/password/forgot", {"email": email})
    assert forgot.status_code == 202
    assert (await refresh(net, other, "x" * 43)).status_code == 401


# Per-recipient limits on mail: a flood answers as always but mails nothing more.


def mails_to(path: Path, address: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    messages = [json.loads(line) for line in path.read_text().splitlines()]
    return [m for m in messages if m["to"] == address]


def reset_token(mail: dict[str, Any]) -> str:
    body: str = mail["body"]
    link = next(line for line in body.splitlines() if "#token=" in line)
    return link.rsplit("#token=", 1)[1]


@pytest.mark.parametrize("overrides", [{"mail_recipient_limit": 3}])
async def test_sec_12_a_mail_flood_sends_at_most_the_cap_and_keeps_the_last_reset_link(
    net: Net, tmp_path: Path
) -> None:
    mail_file, victim = tmp_path / "mail.jsonl", "victim@example.com"
    outbox = net.app.state.keel.service(AccountService).outbox
    await register(net, victim)
    # A verified victim (an unverified address's re-registration ends its links by design).
    await outbox.drain()
    (link,) = mails_to(mail_file, victim)
    verified = await net.post(OWNER_HOME, "/auth/verify-email", {"token": reset_token(link)})
    assert verified.status_code == 200, verified.text
    for n in range(8):
        forgot = await net.post(f"192.0.2.{n + 1}", "/auth/password/forgot", {"email": victim})
        assert forgot.status_code == 202
        again = {"email": victim, "password": WRONG}
        assert (await net.post(f"192.0.2.{n + 1}", "/auth/register", again)).status_code == 202
    await outbox.drain()
    received = mails_to(mail_file, victim)
    assert len(received) == 3, [m["kind"] for m in received]
    # The last reset link the victim got was not cancelled by the requests beyond the cap.
    [*_, last_reset] = [m for m in received if m["kind"] == "password_reset"]
    new_password = "a new and unguessable passphrase 9"
    body = {"token": reset_token(last_reset), "new_password": new_password}
    reset = await net.post(OWNER_HOME, "/auth/password/reset", body)
    assert reset.status_code == 200, reset.text
    # An e-mail change aimed at the victim's address tells its owner, within the same cap.
    attacker = "attacker@example.com"
    await register(net, attacker)
    net.tokens[attacker] = await owner_token(net, attacker)
    http = await net.from_ip(OWNER_HOME)
    bearer = {"Authorization": f"Bearer {net.tokens[attacker]}"}
    for _ in range(3):
        body = {"email": victim, "current_password": PASSWORD}
        assert (await http.patch("/users/me", json=body, headers=bearer)).status_code == 200
    await outbox.drain()
    # The reset's own notice is not limited (it says the password changed); nothing else came.
    assert [m["kind"] for m in mails_to(mail_file, victim)[3:]] == ["password_changed"]


async def test_sec_13_a_re_authentication_whose_audit_record_fails_is_still_counted(
    net: Net,
) -> None:
    email = "unaudited-owner@example.com"
    await register(net, email)
    net.tokens[email] = await owner_token(net, email)
    lost = fail_audit_of(net, "user_deleted", "authn_login_fail_max", "authn_login_lock")
    for n in range(10):
        http = await net.from_ip(f"203.0.113.{n + 1}")
        response = await http.request(
            "DELETE",
            "/users/me",
            json={"password": WRONG},
            headers={"Authorization": f"Bearer {net.tokens[email]}"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "current_password_invalid"
    assert lost.count("user_deleted") == 10
    assert await check_password(net, "delete", "203.0.113.99", email, PASSWORD) == 429
