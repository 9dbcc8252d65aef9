"""The notes service under test: keel's whole app with the notes parts, on SQLite and PostgreSQL.

``KEEL_TEST_DATABASE_URL`` names a PostgreSQL server; each test gets a fresh
database there (and a fresh SQLite file), migrated with keel's revisions and
the service's own (``KEEL_MIGRATIONS=notes.migrations``). Without it the
PostgreSQL runs skip, unless ``KEEL_TEST_REQUIRE_BACKENDS`` is set (CI), in
which case they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from keel.db import migrate
from keel.settings import Settings
from notes.app import create

from ._service import Service


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEEL_STATE_FILE", str(tmp_path / "state.sqlite3"))
    monkeypatch.setenv("KEEL_ENUMERATION_FLOOR", "0")
    monkeypatch.setenv("KEEL_FAILED_LOGIN_FLOOR", "0")


async def _fresh_postgres() -> tuple[str, str]:
    import asyncpg

    admin = os.environ.get("KEEL_TEST_DATABASE_URL", "").strip()
    if not admin:
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail("KEEL_TEST_DATABASE_URL is not set but KEEL_TEST_REQUIRE_BACKENDS is")
        pytest.skip("KEEL_TEST_DATABASE_URL not set")
    admin = admin.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"notestest_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin)
    return admin, urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/notes.sqlite3"
        return
    import asyncpg

    admin, url = await _fresh_postgres()
    yield url
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        migrations=["notes.migrations"],
        require_verified_email=False,
        mail_backend="file",
        mail_file=str(tmp_path / "mail.jsonl"),
    )
    await asyncio.to_thread(migrate.upgrade, settings.database)
    app = create(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://notes.test") as http:
            yield Service(app, http, settings)
