"""keel's Alembic environment: async, configured only through ``keel.db.migrate``.

The database settings arrive in ``config.attributes`` (never from a file).
On PostgreSQL the whole run is one transaction holding
``pg_advisory_xact_lock(ADVISORY_LOCK_KEY)``: concurrent runs queue up and each
reads the version table only once it holds the lock. On SQLite, tables are
rebuilt in batch mode with foreign keys off (a rebuild drops the old table,
which must not cascade), and ``PRAGMA foreign_key_check`` must come back clean.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

import keel.db.models  # noqa: F401  (registers keel's own tables on Base.metadata)
from keel.db.base import Base
from keel.db.engine import build_engine
from keel.db.migrate import (
    ADVISORY_LOCK_KEY,
    METADATA_ATTRIBUTE,
    SETTINGS_ATTRIBUTE,
    render_item,
)
from keel.db.revision import KEEL_VERSIONS_DIR, LEGACY_VERSION_TABLE, VERSION_TABLE, revisions_in
from keel.errors import ConfigurationError
from keel.settings import DatabaseSettings


def _settings() -> DatabaseSettings:
    settings = context.config.attributes.get(SETTINGS_ATTRIBUTE)
    if not isinstance(settings, DatabaseSettings):
        raise ConfigurationError(
            "keel's migrations run through keel.db.migrate (`keel db upgrade`), not the alembic CLI"
        )
    return settings


def _metadata() -> MetaData:
    metadata = context.config.attributes.get(METADATA_ATTRIBUTE, Base.metadata)
    assert isinstance(metadata, MetaData)
    return metadata


def _check_foreign_keys(connection: Connection) -> None:
    violations = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
    if violations:
        tables = sorted({str(row[0]) for row in violations})
        raise ConfigurationError(f"migration left foreign key violations in: {', '.join(tables)}")


def _adopt_legacy_version_table(connection: Connection) -> None:
    """Move keel's revision from ``alembic_version`` (before the table was named) to its own.

    Only when every row there is one of keel's revisions: a table an
    application's own Alembic set-up uses is left alone.
    """
    tables = inspect(connection)
    if tables.has_table(VERSION_TABLE) or not tables.has_table(LEGACY_VERSION_TABLE):
        return
    rows = {
        str(row)
        for row in connection.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}"))  # noqa: S608
        .scalars()
        .all()
    }
    if not rows or not rows <= revisions_in(KEEL_VERSIONS_DIR):
        return
    connection.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    for revision in sorted(rows):
        connection.execute(
            text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:revision)"),  # noqa: S608
            {"revision": revision},
        )
    connection.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def _run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=_metadata(),
        render_as_batch=sqlite,
        compare_type=True,
        render_item=render_item,
        transaction_per_migration=False,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        _adopt_legacy_version_table(connection)
        context.run_migrations()
        if sqlite:
            _check_foreign_keys(connection)


async def _run_online(settings: DatabaseSettings) -> None:
    engine = build_engine(settings, poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise ConfigurationError("offline (--sql) migrations are not supported")

asyncio.run(_run_online(_settings()))
