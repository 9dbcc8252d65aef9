"""An ``AccountService`` over ``database`` (``tests/conftest.py``): a migrated SQLite file, then
real PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from keel._clock import FrozenClock
from keel.accounts import (
    AccountService,
    AccountSettings,
    FileMailer,
    LoginGuard,
    Outbox,
    SessionHooks,
    UserChanged,
)
from keel.accounts.sealing import BodySealer
from keel.audit import AuditTrail
from keel.db import Database
from keel.security.hashing import PasswordHasher
from keel.security.keys import KeySet
from keel.security.passwords import PasswordPolicy
from keel.security.tokens import AccessTokens
from keel.settings import AccountPolicySettings, MailSettings, Settings

from ._hooks import FakeGuard, FakeSessions
from ._service import ServiceFactory


@pytest.fixture
async def hasher(settings: Settings) -> AsyncIterator[PasswordHasher]:
    cheap = dataclasses.replace(settings.passwords, argon2_memory_kib=1024, argon2_time_cost=1)
    owned = PasswordHasher(cheap)
    try:
        yield owned
    finally:
        owned.close()


@pytest.fixture
async def service_factory(
    settings: Settings,
    database: Database,
    hasher: PasswordHasher,
    clock: FrozenClock,
    tmp_path: Path,
) -> AsyncIterator[ServiceFactory]:
    """Services sharing one database, hasher, mailbox and cache.

    ``make(guard=..., sessions=..., on_user_changed=..., hasher=...)`` gives
    the service those; any other keyword overrides a field of ``AccountSettings``
    or of its ``policy`` (``AccountPolicySettings``), whose floors are 0 unless given.
    """
    audit = AuditTrail.from_settings(database, settings.audit, clock)
    mailer = FileMailer(tmp_path / "mail.jsonl", sender="keel <no-reply@keel.example>")
    keys = settings.audit
    outbox = Outbox(
        mailer,
        database=database,
        sealer=BodySealer(keys.keys, keys.current_key_id),
        audit=audit,
        settings=MailSettings(max_attempts=2, retry_base=0.01, retry_max=0.02),
    )
    tokens = AccessTokens(KeySet.generate("EdDSA"), settings.tokens, clock=clock)

    def make(
        *,
        guard: LoginGuard | None = None,
        sessions: SessionHooks | None = None,
        on_user_changed: Sequence[UserChanged] = (),
        hasher: PasswordHasher = hasher,
        **overrides: Any,
    ) -> AccountService:
        policy_fields = {field.name for field in dataclasses.fields(AccountPolicySettings)}
        policy: dict[str, Any] = {"enumeration_floor": 0.0, "failed_login_floor": 0.0}
        policy.update((name, value) for name, value in overrides.items() if name in policy_fields)
        account_settings = AccountSettings(
            service_name="keel",
            public_url="https://app.keel.example",
            policy=AccountPolicySettings(**policy),
            **{name: value for name, value in overrides.items() if name not in policy_fields},
        )
        return AccountService(
            database=database,
            audit=audit,
            hasher=hasher,
            policy=PasswordPolicy(settings.passwords),
            settings=account_settings,
            clock=clock,
            tokens=tokens,
            outbox=outbox,
            guard=guard,
            sessions=sessions,
            on_user_changed=on_user_changed,
        )

    yield make
    await outbox.drain()


@pytest.fixture
def service(service_factory: ServiceFactory) -> AccountService:
    return service_factory()


@pytest.fixture
def guard() -> FakeGuard:
    """A login guard that locks an account at its third consecutive failure."""
    return FakeGuard(threshold=3)


@pytest.fixture
def sessions() -> FakeSessions:
    return FakeSessions()


@pytest.fixture
def guarded(
    service_factory: ServiceFactory, guard: FakeGuard, sessions: FakeSessions
) -> AccountService:
    """An ``AccountService`` with ``guard`` and ``sessions`` (threshold 3)."""
    return service_factory(lockout_threshold=3, guard=guard, sessions=sessions)
