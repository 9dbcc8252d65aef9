"""The app runs housekeeping on its own: an old ended session disappears without a command."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from keel.accounts import User
from keel.api.app import create_app
from keel.auth.models import AuthSession
from keel.db import Database, migrate
from keel.settings import Settings

from ._serve import serve_in_process

SettingsFactory = Callable[..., Settings]


async def _sessions(database: Database) -> int:
    async with database.unit_of_work() as uow:
        count = await uow.session.execute(select(func.count()).select_from(AuthSession))
        return int(count.scalar_one())


async def test_the_housekeeping_loop_prunes_an_old_ended_session(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(housekeeping_interval=1, ended_retention=0)
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create_app(settings)
    database: Database = app.state.keel.database
    now = app.state.keel.clock.now()
    user_id = uuid.uuid4()
    long_ago = now - timedelta(days=2)
    async with database.unit_of_work() as uow:
        uow.session.add(
            User(
                id=user_id,
                email="old@keel.example",
                email_key="old@keel.example",
                email_verified_at=now,
                display_name=None,
                password_hash="x",
                roles="user",
                is_active=True,
                tokens_valid_after=long_ago.replace(microsecond=0),
                created_at=long_ago,
                updated_at=long_ago,
            )
        )
        await uow.flush()
        uow.session.add(
            AuthSession(
                id=uuid.uuid4(),
                user_id=user_id,
                scopes="user",
                generation=1,
                created_at=long_ago,
                last_used_at=long_ago,
                idle_expires_at=long_ago,
                absolute_expires_at=long_ago,
                revoked_at=None,
                revoked_reason=None,
                source_ip=None,
                user_agent=None,
            )
        )
    assert await _sessions(database) == 1
    async with serve_in_process(app):
        for _ in range(50):
            if await _sessions(database) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _sessions(database) == 0
