"""What a sessions test touches (``World``, built by the ``world`` fixture) and the request
origin its logins use."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from keel._clock import FrozenClock
from keel.accounts import User
from keel.accounts.state import whole_second
from keel.auth import UNKNOWN_SUBJECT, SecurityState, SubjectRecord, SubjectState
from keel.auth.sessions import SessionService
from keel.cache import LocalInvalidations, MemoryStore
from keel.db import Database
from keel.security.tokens import AccessTokens


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
    security: SecurityState
    make: Callable[..., SessionService]

    async def ended(self, user_id: str, session_id: str) -> bool:
        """Whether the shared store says the session ended, without asking the database."""

        async def not_the_record(subject: str, sid: str) -> bool:
            raise AssertionError("the session's end was not written through")

        cache_only = SecurityState(
            self.store,
            LocalInvalidations(),
            load_subject=self.security_record,
            load_session=not_the_record,
        )
        _, live = await cache_only.check(user_id, session_id)
        return not live

    async def security_record(self, user_id: str) -> SubjectRecord:
        state = self.states.get(user_id)
        return UNKNOWN_SUBJECT if state is None else SubjectRecord(1, state)

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
