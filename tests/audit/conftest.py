"""Migrated databases for the audit tests: a SQLite file and real PostgreSQL.

Migrating once per session is what keeps the suite fast: each test gets a
copy of a migrated SQLite file; on PostgreSQL, where creating a database costs
a quarter of a second on a busy machine, tests share one migrated database
that is reset to an empty chain before each of them (``audit_url``), and the
few that change more than the audit tables (roles, schema) get a database of
their own created from a migrated template (``migrated_postgres_url``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from keel.db import Database
from keel.db.migrate import upgrade
from tests.audit._support import make_settings


def _postgres_admin_dsn() -> str:
    url = os.environ.get("KEEL_TEST_DATABASE_URL", "").strip()
    if not url:
        if os.environ.get("KEEL_TEST_REQUIRE_BACKENDS"):
            pytest.fail("KEEL_TEST_DATABASE_URL is not set but KEEL_TEST_REQUIRE_BACKENDS is")
        pytest.skip("KEEL_TEST_DATABASE_URL not set")
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit-template") / "keel.sqlite3"
    upgrade(make_settings(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """(admin DSN, name of a migrated template database)."""
    dsn = _postgres_admin_dsn()
    name = f"keeltmpl_{secrets.token_hex(6)}"
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    try:
        upgrade(make_settings(_with_database(dsn, name)))
        yield dsn, name
    finally:
        asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def migrated_sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "keel.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
async def migrated_postgres_url(postgres_template: tuple[str, str]) -> AsyncIterator[str]:
    dsn, template = postgres_template
    name = f"keeltest_{secrets.token_hex(6)}"
    await _admin(dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _with_database(dsn, name)
    finally:
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_AUDIT_TABLES = ("audit_events", "audit_checkpoints", "audit_chain_head")
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"


async def _table_names(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [str(row[0]) for row in await conn.fetch(_TABLES)]
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def shared_postgres(postgres_template: tuple[str, str]) -> Iterator[tuple[str, list[str]]]:
    """One migrated database for the whole session (reset before each use), and its tables."""
    dsn, template = postgres_template
    name = f"keeltest_{secrets.token_hex(6)}"
    asyncio.run(_admin(dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = _with_database(dsn, name)
    try:
        yield url, asyncio.run(_table_names(url))
    finally:
        asyncio.run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _reset(url: str, migrated: list[str]) -> None:
    """An empty chain again, whatever the previous test did (as the superuser it is)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for table in _AUDIT_TABLES:
                await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            await conn.execute("TRUNCATE audit_events, audit_checkpoints, audit_prune_window")
            await conn.execute("DELETE FROM audit_chain_head")
            await conn.execute(
                "INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, $1)", "0" * 64
            )
            for table in _AUDIT_TABLES:
                await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            for row in await conn.fetch(_TABLES):  # tables a test created
                if row[0] not in migrated:
                    await conn.execute(f'DROP TABLE "{row[0]}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def reset_postgres_url(shared_postgres: tuple[str, list[str]]) -> str:
    url, migrated = shared_postgres
    await _reset(url, migrated)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def audit_url(request: pytest.FixtureRequest) -> str:
    """A migrated database with an empty chain (plain URL): SQLite, then PostgreSQL."""
    name = "migrated_sqlite_url" if request.param == "sqlite" else "reset_postgres_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def audit_database(audit_url: str) -> AsyncIterator[Database]:
    """A ``Database`` on ``audit_url``, disposed afterwards."""
    db = Database(make_settings(audit_url))
    try:
        yield db
    finally:
        await db.dispose()
