"""A ``SessionService`` over a migrated database of each kind (a SQLite file, real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from keel._clock import FrozenClock
from keel.accounts import User
from keel.accounts.state import whole_second
from keel.audit import AuditTrail
from keel.auth import SubjectState
from keel.auth.sessions import SessionService
from keel.cache import MemoryStore
from keel.db import Database
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens
from keel.settings import Settings
from tests.accounts.conftest import database, database_url, settings

__all__ = ["ORIGIN", "World", "database", "database_url", "settings", "world"]


@dataclass(frozen=True, slots=True)
class Origin:
    source_ip: str | None = "192.0.2.10"
    user_agent: str | None = "pytest"
    request_id: str | None = None


ORIGIN = Origin()


@dataclass
class World:
    """Everything a sessions test touches."""

    database: Database
    store: MemoryStore
    clock: FrozenClock
    tokens: AccessTokens
    states: dict[str, SubjectState | None]
    make: Callable[..., SessionService]

    async def user(self, *, roles: str = "user") -> str:
        """Insert an active user directly and return its id."""
        now = self.clock.now()
        user_id = uuid.uuid4()
        async with self.database.unit_of_work() as uow:
            uow.session.add(
                User(
                    id=user_id,
                    email=f"{user_id.hex}@example.com",
                    email_key=f"{user_id.hex}@example.com",
                    email_verified_at=now,
                    display_name=None,
                    password_hash="x",
                    roles=roles,
                    is_active=True,
                    tokens_valid_after=whole_second(now),
                    created_at=now,
                    updated_at=now,
                )
            )
        self.states[str(user_id)] = SubjectState(True, whole_second(now), frozenset(roles.split()))
        return str(user_id)

    async def login(
        self, service: SessionService, user_id: str, scopes: frozenset[str] = frozenset({"user"})
    ) -> tuple[str, str]:
        """Start a session as a login would; return (session id, first refresh token)."""
        session_id = str(uuid.uuid4())
        async with self.database.unit_of_work() as uow:
            token = await service.start(
                uow, user_id=user_id, session_id=session_id, scopes=scopes, origin=ORIGIN
            )
        return session_id, token


@pytest.fixture
async def world(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[World]:
    store = MemoryStore(clock)
    tokens = AccessTokens(KeySet.generate("EdDSA"), settings.tokens, clock=clock)
    audit = AuditTrail.from_settings(database, settings.audit, clock)
    states: dict[str, SubjectState | None] = {}

    async def load(user_id: str) -> SubjectState | None:
        return states.get(user_id)

    def make(**overrides: Any) -> SessionService:
        return SessionService(
            database=database,
            audit=audit,
            store=store,
            settings=replace(settings.sessions, **overrides),
            clock=clock,
            tokens=tokens,
            subject_state=load,
        )

    yield World(database, store, clock, tokens, states, make)
    await store.close()
