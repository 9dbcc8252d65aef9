"""A ``SessionService`` over ``database`` (``tests/conftest.py``): a migrated SQLite file, then
real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from keel._clock import FrozenClock
from keel.audit import AuditTrail
from keel.auth import UNKNOWN_SUBJECT, SecurityState, SubjectRecord, SubjectState
from keel.auth.sessions import SessionService, session_is_live
from keel.cache import LocalInvalidations, MemoryStore
from keel.db import Database
from keel.security.keys import KeySet
from keel.security.tokens import AccessTokens
from keel.settings import Settings

from ._world import World

__all__ = ["world"]


@pytest.fixture
async def world(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[World]:
    store = MemoryStore(clock)
    tokens = AccessTokens(KeySet.generate("EdDSA"), settings.tokens, clock=clock)
    audit = AuditTrail.from_settings(database, settings.audit, clock)
    states: dict[str, SubjectState | None] = {}

    async def load(user_id: str) -> SubjectState | None:
        return states.get(user_id)

    async def record(user_id: str) -> SubjectRecord:
        state = states.get(user_id)
        return UNKNOWN_SUBJECT if state is None else SubjectRecord(1, state)

    async def live(user_id: str, session_id: str) -> bool:
        return await session_is_live(database, user_id, session_id)

    security = SecurityState(store, LocalInvalidations(), load_subject=record, load_session=live)

    def make(**overrides: Any) -> SessionService:
        return SessionService(
            database=database,
            audit=audit,
            state=security,
            settings=replace(settings.sessions, **overrides),
            clock=clock,
            tokens=tokens,
            subject_state=load,
        )

    yield World(database, store, clock, tokens, states, security, make)
    await store.close()
