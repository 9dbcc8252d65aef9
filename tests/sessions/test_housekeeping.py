"""Housekeeping: ended sessions and spent one-time tokens go after the retention, live ones stay.

On SQLite and real PostgreSQL: rows are inserted with chosen timestamps, one
round of ``Housekeeper`` runs at a frozen ``now``, and exactly the rows that
ended more than the retention ago are gone (with their refresh tokens). A
round is bounded (a spent budget stops it after one batch, the next carries
on), and only the instance holding the round's lock prunes.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select

from keel.accounts.models import EmailVerificationToken, PasswordResetToken
from keel.api.housekeeping import Housekeeper
from keel.auth.models import AuthSession, RefreshTokenRow
from keel.cache import MemoryStore
from keel.db import Database

from ._world import World

RETENTION = 7 * 24 * 3600
DAY = timedelta(days=1)


def _digest() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


async def _session(
    world: World,
    user_id: str,
    *,
    idle: datetime,
    absolute: datetime,
    revoked: datetime | None = None,
) -> uuid.UUID:
    now = world.clock.now()
    session_id = uuid.uuid4()
    async with world.database.unit_of_work() as uow:
        uow.session.add(
            AuthSession(
                id=session_id,
                user_id=uuid.UUID(user_id),
                scopes="user",
                generation=1,
                created_at=now - 30 * DAY,
                last_used_at=now - 30 * DAY,
                idle_expires_at=idle,
                absolute_expires_at=absolute,
                revoked_at=revoked,
                revoked_reason="logout" if revoked else None,
                source_ip=None,
                user_agent=None,
            )
        )
        await uow.flush()
        uow.session.add(
            RefreshTokenRow(
                session_id=session_id,
                token_hash=_digest(),
                generation=1,
                created_at=now - 30 * DAY,
                rotated_at=None,
                successor_sealed=None,
            )
        )
    return session_id


async def _tokens(world: World, user_id: str, *, expires: datetime, used: datetime | None) -> None:
    now = world.clock.now()
    async with world.database.unit_of_work() as uow:
        uow.session.add(
            EmailVerificationToken(
                user_id=uuid.UUID(user_id),
                token_hash=_digest(),
                email="x@keel.example",
                email_key="x@keel.example",
                created_at=now - 30 * DAY,
                expires_at=expires,
                used_at=used,
            )
        )
        uow.session.add(
            PasswordResetToken(
                user_id=uuid.UUID(user_id),
                token_hash=_digest(),
                created_at=now - 30 * DAY,
                expires_at=expires,
                used_at=used,
            )
        )


async def _ids(database: Database, model: type) -> set[uuid.UUID]:
    async with database.unit_of_work() as uow:
        return set((await uow.session.execute(select(model.id))).scalars())  # type: ignore[attr-defined]


async def _count(database: Database, model: type) -> int:
    async with database.unit_of_work() as uow:
        counted = await uow.session.execute(select(func.count()).select_from(model))
        return int(counted.scalar_one())


def _keeper(world: World, store: MemoryStore | None = None, **overrides: float) -> Housekeeper:
    values: dict[str, float] = {"budget": 30.0, "interval": 3600.0}
    values.update(overrides)
    return Housekeeper(
        world.database,
        store or world.store,
        world.clock,
        retention=RETENTION,
        budget=values["budget"],
        interval=values["interval"],
        batch=int(values.get("batch", 500)),
    )


async def test_ended_sessions_past_the_retention_go_with_their_refresh_tokens(
    world: World,
) -> None:
    user = await world.user()
    now = world.clock.now()
    long_ago, recently, ahead = now - 8 * DAY, now - 1 * DAY, now + DAY
    live = await _session(world, user, idle=ahead, absolute=ahead + DAY)
    ended_recently = await _session(world, user, idle=ahead, absolute=ahead, revoked=recently)
    await _session(world, user, idle=ahead, absolute=ahead, revoked=long_ago)
    await _session(world, user, idle=long_ago, absolute=ahead)
    await _session(world, user, idle=long_ago, absolute=long_ago)

    report = await _keeper(world).run_once()

    assert report.complete
    assert report.deleted["sessions"] == 3
    assert await _ids(world.database, AuthSession) == {live, ended_recently}
    assert await _count(world.database, RefreshTokenRow) == 2  # the pruned sessions' went too
    assert (await _keeper(world).run_once()).deleted["sessions"] == 0


async def test_spent_one_time_tokens_past_the_retention_go_unspent_ones_stay(world: World) -> None:
    user = await world.user()
    now = world.clock.now()
    await _tokens(world, user, expires=now + DAY, used=None)  # pending: stays
    await _tokens(world, user, expires=now - DAY, used=None)  # expired recently: stays
    await _tokens(world, user, expires=now - 8 * DAY, used=None)  # expired long ago: goes
    await _tokens(world, user, expires=now + DAY, used=now - 8 * DAY)  # used long ago: goes

    report = await _keeper(world).run_once()

    assert report.deleted["email_verification_tokens"] == 2
    assert report.deleted["password_reset_tokens"] == 2
    assert await _count(world.database, EmailVerificationToken) == 2
    assert await _count(world.database, PasswordResetToken) == 2


async def test_a_round_stops_when_its_budget_is_spent_and_the_next_carries_on(
    world: World,
) -> None:
    user = await world.user()
    long_ago = world.clock.now() - 8 * DAY
    for _ in range(5):
        await _session(world, user, idle=long_ago, absolute=long_ago)

    began = time.monotonic()
    first = await _keeper(world, budget=1e-9, batch=2).run_once()
    assert time.monotonic() - began < 5
    assert not first.complete
    assert first.deleted["sessions"] == 2  # one batch, then the spent budget stopped it
    rest = await _keeper(world, batch=2).run_once()
    assert rest.complete
    assert rest.deleted["sessions"] == 3
    assert await _count(world.database, AuthSession) == 0


async def test_only_the_instance_holding_the_rounds_lock_prunes(world: World) -> None:
    user = await world.user()
    long_ago = world.clock.now() - 8 * DAY
    await _session(world, user, idle=long_ago, absolute=long_ago)
    shared = MemoryStore(world.clock)
    first, second = _keeper(world, shared), _keeper(world, shared)

    report = await first.round()
    assert report is not None
    assert report.deleted["sessions"] == 1
    assert await second.round() is None  # same interval: the other instance skips
    world.clock.advance(3600)
    assert await second.round() is not None  # the lock lapsed: next round, anyone
    await shared.close()
