"""An app with the accounts routes, wired as ``create_app`` wires them (``build_account_service``).

``TokenAuthenticator`` stands in for ``keel.auth``'s bearer authenticator
(built in parallel): it verifies the access token and then the user's state
straight from the database, which is what the real one does through its cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from sqlalchemy import select, text

from keel._clock import FrozenClock
from keel.accounts import (
    AccountService,
    FileMailer,
    LoginGuard,
    SessionHooks,
    User,
    load_user_state,
)
from keel.api.accounts import build_accounts_router, install_read_me
from keel.api.app import create_app
from keel.api.assembly import build_account_service
from keel.api.principal import Authenticator, Principal
from keel.api.state import get_context
from keel.audit.models import AuditEventRow
from keel.db import Database, migrate
from keel.security.hashing import PasswordHasher
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens, InvalidToken
from keel.settings import MailSettings, Settings

from ._serve import serve_in_process

__all__ = [
    "STRONG",
    "AccountsApp",
    "TokenAuthenticator",
    "audit_rows",
    "build_accounts_app",
    "cheap_hasher",
    "running",
    "table_dump",
    "user_row",
]

#: A password every test may use: long, not common, unrelated to any test address.
STRONG = "correct horse battery staple 42"


class TokenAuthenticator:
    """Bearer access tokens, refused for a missing/inactive user or one issued before a bump."""

    def __init__(self, tokens: AccessTokens) -> None:
        self.tokens = tokens

    async def authenticate(self, request: Request) -> Principal | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = self.tokens.verify(token)
        except InvalidToken:
            return None
        state = await load_user_state(get_context(request).database, claims.subject)
        if state is None or not state.active or claims.issued_at < state.tokens_valid_after:
            return None
        return Principal(subject=claims.subject, scopes=claims.scopes & state.scopes)


def cheap_hasher(settings: Settings) -> PasswordHasher:
    """Cheap argon2 parameters for tests that are not about the parameters."""
    return PasswordHasher(
        dataclasses.replace(settings.passwords, argon2_memory_kib=1024, argon2_time_cost=1)
    )


@dataclass
class AccountsApp:
    app: FastAPI
    settings: Settings
    service: AccountService
    mailer: FileMailer
    tokens: AccessTokens
    hasher: PasswordHasher
    clock: FrozenClock

    @property
    def database(self) -> Database:
        database = self.app.state.keel.database
        assert isinstance(database, Database)
        return database

    async def mail(self) -> list[dict[str, Any]]:
        """Every message delivered so far (after the outbox has drained)."""
        outbox = self.service.outbox
        assert outbox is not None
        await outbox.drain()
        return self.mailer.read()

    async def last_token(self, to: str | None = None) -> str:
        """The token in the newest verification link (to ``to`` if given)."""
        for message in reversed(await self.mail()):
            if message["kind"] == "verify_email" and (to is None or message["to"] == to):
                link = next(line for line in message["body"].splitlines() if "#token=" in line)
                return str(link.rsplit("#token=", 1)[1])
        raise AssertionError("no verification mail")

    async def verified_user(
        self, http: httpx.AsyncClient, email: str, password: str = STRONG, **extra: Any
    ) -> str:
        """Register and verify ``email``; returns an access token for it."""
        response = await http.post(
            "/auth/register", json={"email": email, "password": password, **extra}
        )
        assert response.status_code == 202, response.text
        token = await self.last_token(to=email)
        verified = await http.post("/auth/verify-email", json={"token": token})
        assert verified.status_code == 200, verified.text
        login = await http.post("/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


def build_accounts_app(
    settings: Settings,
    mail_path: Path,
    *,
    clock: FrozenClock | None = None,
    hasher: PasswordHasher | None = None,
    on_user_changed: Callable[[str], Any] | None = None,
    authenticator: Authenticator | None = None,
    sessions: SessionHooks | None = None,
    guard: LoginGuard | None = None,
) -> AccountsApp:
    clock = clock or FrozenClock()
    tokens = AccessTokens(KeySet.generate("EdDSA"), settings.tokens, clock=clock)
    app = create_app(
        settings,
        clock=clock,
        authenticator=authenticator or TokenAuthenticator(tokens),
        keys=tokens.keys,
        accounts=False,  # installed below with a file mailer and a cheap hasher
    )
    context = app.state.keel
    hasher = hasher or cheap_hasher(settings)

    async def close_hasher() -> None:
        hasher.close()

    context.supervisor.add_closer("test_hasher", close_hasher)
    mailer = FileMailer(mail_path, sender="keel <no-reply@keel.example>", clock=clock)
    service = build_account_service(
        context,
        access_tokens=tokens,
        mailer=mailer,
        hasher=hasher,
        on_user_changed=on_user_changed or (),
        outbox_settings=MailSettings(max_attempts=3, retry_base=0.01, retry_max=0.02),
        sessions=sessions,
        guard=guard,
    )
    areas = service.areas
    install_read_me(app, areas.profile)
    app.include_router(
        build_accounts_router(
            registration=areas.registration, login=areas.login, profile=areas.profile
        )
    )
    return AccountsApp(app, settings, service, mailer, tokens, hasher, clock)


@asynccontextmanager
async def running(accounts: AccountsApp) -> AsyncIterator[httpx.AsyncClient]:
    """Migrate, then serve ``accounts.app`` in process for one test."""
    await asyncio.to_thread(migrate.upgrade, accounts.settings.database)
    async with serve_in_process(accounts.app) as http:
        yield http
        outbox = accounts.service.outbox
        assert outbox is not None
        await outbox.drain()


async def user_row(database: Database, email_key: str) -> User | None:
    async with database.unit_of_work() as uow:
        return (
            await uow.session.execute(select(User).where(User.email_key == email_key))
        ).scalar_one_or_none()


async def audit_rows(database: Database, action: str | None = None) -> list[AuditEventRow]:
    async with database.unit_of_work() as uow:
        query = select(AuditEventRow).order_by(AuditEventRow.seq)
        if action is not None:
            query = query.where(AuditEventRow.action == action)
        return list((await uow.session.execute(query)).scalars())


async def table_dump(database: Database, table: str) -> str:
    """Every row of ``table`` as one JSON text (for canary searches)."""
    async with database.unit_of_work() as uow:
        rows = (await uow.session.execute(text(f"SELECT * FROM {table}"))).mappings().all()  # noqa: S608 - test-only, fixed names
    return json.dumps([{k: str(v) for k, v in row.items()} for row in rows])
